package tusclient_test

import (
	"maps"
	"testing"

	"github.com/tusgate/tusgate/internal/tusclient"
)

func TestMetadataRoundTrip(t *testing.T) {
	tests := []map[string]string{
		{},
		{"filename": "a b,c.mp4", "empty": "", "utf8": "é☃"},
	}
	for _, in := range tests {
		h := tusclient.EncodeMetadata(in)
		got, err := tusclient.DecodeMetadata(h)
		if err != nil {
			t.Fatalf("DecodeMetadata(%q): %v", h, err)
		}
		if !maps.Equal(got, in) {
			t.Errorf("round trip of %v: got %v", in, got)
		}
	}
	if got, want := tusclient.EncodeMetadata(map[string]string{"b": "2", "a": "1"}), "a MQ==,b Mg=="; got != want {
		t.Errorf("EncodeMetadata: got %q, want %q", got, want)
	}
}
