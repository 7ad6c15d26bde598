package apivideotest

// Test-only options that lower limits too large to reach in a test.

// WithMaxVideoSize lowers the largest video size (default MaxVideoSize).
func WithMaxVideoSize(n int64) Option { return func(s *Server) { s.limits.maxVideo = n } }

// WithMaxParts lowers the largest number of chunks per video (default
// MaxParts).
func WithMaxParts(n int) Option { return func(s *Server) { s.limits.maxParts = n } }
