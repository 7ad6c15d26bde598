package main

import "testing"

func TestRESPCounter(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
	}{
		{"one command", "*1\r\n$4\r\nPING\r\n", 1},
		{"pipeline", "*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nEXEC\r\n", 3},
		{"payload with RESP inside", "*2\r\n$3\r\nGET\r\n$12\r\n*1\r\n$4\r\nPING\r\n", 1},
		{"empty bulk string", "*2\r\n$3\r\nGET\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n", 2},
		{"inline command", "PING\r\n", 1},
		{"nothing", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whole, then split at every byte boundary.
			var whole respCounter
			if got := whole.feed([]byte(tt.in)); got != tt.want {
				t.Errorf("whole: got %d commands, want %d", got, tt.want)
			}
			var bytewise respCounter
			got := 0
			for i := range len(tt.in) {
				got += bytewise.feed([]byte{tt.in[i]})
			}
			if got != tt.want {
				t.Errorf("byte by byte: got %d commands, want %d", got, tt.want)
			}
		})
	}
}
