package boltstore

import bolt "go.etcd.io/bbolt"

// CommittedTxID returns the id of the last committed write transaction:
// it grows by one per commit.
func (s *Store) CommittedTxID() int {
	var id int
	_ = s.db.View(func(tx *bolt.Tx) error {
		id = tx.ID()
		return nil
	})
	return id
}
