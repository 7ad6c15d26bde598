package benchkit_test

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/tusgate/tusgate/internal/benchkit"
)

func TestSizeValue(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"64MiB", 64 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"1.5 MiB", 3 << 19, ""},
		{"1MB", 1_000_000, ""},
		{"512", 512, ""},
		{"1TiB", 1 << 40, ""},
		{"0", 0, "must be between 1 byte and 1TiB"},
		{"2TiB", 0, "must be between 1 byte and 1TiB"},
		{"lots", 0, "not a size (such as 64MiB)"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n := int64(-1)
			err := benchkit.SizeValue{P: &n, Max: 1 << 40}.Set(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Set(%q): got error %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				if n != -1 {
					t.Errorf("Set(%q) failed but stored %d", tt.in, n)
				}
				return
			}
			if err != nil || n != tt.want {
				t.Errorf("Set(%q): got %d, %v; want %d, nil", tt.in, n, err, tt.want)
			}
		})
	}
	n := int64(5 << 20)
	if got := (benchkit.SizeValue{P: &n}).String(); got != "5MiB" {
		t.Errorf("String of 5MiB: got %q, want 5MiB", got)
	}
	if got := (benchkit.SizeValue{}).String(); got != "" {
		t.Errorf("String of the zero value: got %q, want empty", got)
	}
}

func TestIBytes(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{64 << 20, "64MiB"},
		{1 << 30, "1GiB"},
		{3 << 30, "3GiB"},
		{640 << 10, "640KiB"},
		{1536 << 10, "1536KiB"},
		{1<<20 + 1, "1.0MiB"},
		{1 << 40, "1TiB"},
		{1 << 50, "1PiB"},
		{100, "100B"},
	}
	for _, tt := range tests {
		if got := benchkit.IBytes(tt.in); got != tt.want {
			t.Errorf("IBytes(%d): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func newFlagSet() (*flag.FlagSet, *int, *string) {
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	n := fs.Int("n", 1, "a number")
	s := fs.String("s", "x", "a string")
	return fs, n, s
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantOK  bool
		wantErr string
	}{
		{"flags", []string{"-n", "3"}, true, ""},
		{"none", nil, true, ""},
		{"help", []string{"--help"}, false, ""},
		{"unknown flag", []string{"--nope"}, false, "flag provided but not defined"},
		{"positional", []string{"-n", "3", "extra"}, false, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, _, _ := newFlagSet()
			ok, err := benchkit.ParseFlags(fs, tt.args)
			if ok != tt.wantOK {
				t.Errorf("ok: got %v, want %v", ok, tt.wantOK)
			}
			if tt.wantErr == "" && err != nil {
				t.Errorf("error: got %v, want nil", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error: got %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestApplyUnset(t *testing.T) {
	fs, n, s := newFlagSet()
	if err := fs.Parse([]string{"-n", "7"}); err != nil {
		t.Fatal(err)
	}
	benchkit.ApplyUnset(fs, map[string]func(){
		"n": func() { *n = 100 },
		"s": func() { *s = "preset" },
	})
	if *n != 7 {
		t.Errorf("-n given explicitly: got %d, want 7", *n)
	}
	if *s != "preset" {
		t.Errorf("-s not given: got %q, want the preset", *s)
	}

	defer func() {
		if recover() == nil {
			t.Error("ApplyUnset with an undefined flag name did not panic")
		}
	}()
	benchkit.ApplyUnset(fs, map[string]func(){"typo": func() {}})
}

func TestQuoteCommand(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"/tmp/go-build123/exe/tool"}, "tool"},
		{[]string{"x", "--runs", "3", "--json"}, "tool --runs 3 --json"},
		{[]string{"x", "--tusgate-args", "--workers 8"}, "tool --tusgate-args '--workers 8'"},
		{[]string{"x", "it's", ""}, `tool 'it'\''s' ''`},
		{[]string{"x", "a*b", "$HOME"}, "tool 'a*b' '$HOME'"},
	}
	for _, tt := range tests {
		if got := benchkit.QuoteCommand("tool", tt.args); got != tt.want {
			t.Errorf("QuoteCommand(%q): got %q, want %q", tt.args, got, tt.want)
		}
	}
}
