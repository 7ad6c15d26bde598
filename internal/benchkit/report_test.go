package benchkit_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tusgate/tusgate/internal/benchkit"
)

type testReport struct {
	Name  string        `json:"name"`
	Value benchkit.Stat `json:"value"`
}

func TestOutputWrite(t *testing.T) {
	rep := testReport{Name: "r", Value: benchkit.Stat{Median: 2, Min: 1, Max: 3, N: 3}}
	const wantJSON = `{
  "name": "r",
  "value": {
    "median": 2,
    "min": 1,
    "max": 3,
    "n": 3
  }
}
`
	text := func(w io.Writer) error {
		_, err := io.WriteString(w, "the table\n")
		return err
	}

	t.Run("text", func(t *testing.T) {
		var out bytes.Buffer
		if err := (benchkit.Output{}).Write(&out, rep, text); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != "the table\n" {
			t.Errorf("got %q, want the text", got)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		var out bytes.Buffer
		if err := (benchkit.Output{JSON: true}).Write(&out, rep, text); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != wantJSON {
			t.Errorf("got %q, want %q", got, wantJSON)
		}
	})
	t.Run("text and JSON file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "report.json")
		var out bytes.Buffer
		if err := (benchkit.Output{JSONFile: path}).Write(&out, rep, text); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != "the table\n" {
			t.Errorf("stdout: got %q, want the text", got)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != wantJSON {
			t.Errorf("file: got %q, want %q", b, wantJSON)
		}
	})
	t.Run("JSON file fails", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "missing-dir", "report.json")
		var out bytes.Buffer
		err := (benchkit.Output{JSONFile: path}).Write(&out, rep, text)
		if err == nil || !strings.HasPrefix(err.Error(), "--json-file: ") || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("got %v, want a --json-file error wrapping os.ErrNotExist", err)
		}
		if out.Len() != 0 {
			t.Errorf("stdout: got %q, want nothing after the file failed", out.String())
		}
	})
	t.Run("text fails", func(t *testing.T) {
		boom := errors.New("boom")
		err := (benchkit.Output{}).Write(io.Discard, rep, func(io.Writer) error { return boom })
		if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "write report: ") {
			t.Errorf("got %v, want a write report error wrapping boom", err)
		}
	})
}

func TestOutputRegisterFlags(t *testing.T) {
	var o benchkit.Output
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	o.RegisterFlags(fs, "Markdown report")
	if err := fs.Parse([]string{"--json", "--json-file", "r.json"}); err != nil {
		t.Fatal(err)
	}
	if !o.JSON || o.JSONFile != "r.json" {
		t.Errorf("got %+v, want JSON set and JSONFile r.json", o)
	}
	if got, want := fs.Lookup("json").Usage, "print JSON instead of the Markdown report"; got != want {
		t.Errorf("--json usage: got %q, want %q", got, want)
	}
}
