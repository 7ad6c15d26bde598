package s3data

// SetListPageSize sets the MaxKeys of s's listings, to test pagination
// with few objects.
func SetListPageSize(s *Store, n int32) { s.listPageSize = n }
