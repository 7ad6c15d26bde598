package redisstore

// Wrap exposes wrap to the tests of error classification.
var Wrap = wrap
