package gateway

// ParseMetadata exposes the strict Upload-Metadata parser to the external
// tests (fuzzing).
var ParseMetadata = parseMetadata
