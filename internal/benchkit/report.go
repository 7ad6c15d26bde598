package benchkit

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
)

// Output says where a tool writes its report: JSON or text on stdout, and
// the JSON to a file too.
type Output struct {
	// JSON prints the report as JSON instead of text.
	JSON bool
	// JSONFile, when set, also receives the report as JSON.
	JSONFile string
}

// RegisterFlags defines --json and --json-file on fs; text names the
// text form in --json's help, such as "text table".
func (o *Output) RegisterFlags(fs *flag.FlagSet, text string) {
	fs.BoolVar(&o.JSON, "json", o.JSON, "print JSON instead of the "+text)
	fs.StringVar(&o.JSONFile, "json-file", o.JSONFile, "also write the JSON report to this file")
}

// Write writes report (any value encoding/json takes) as JSON to
// o.JSONFile when set, then to w: as indented JSON when o.JSON, else with
// text.
func (o Output) Write(w io.Writer, report any, text func(io.Writer) error) error {
	if o.JSONFile != "" {
		if err := writeJSONFile(o.JSONFile, report); err != nil {
			return fmt.Errorf("--json-file: %w", err)
		}
	}
	var err error
	if o.JSON {
		err = writeJSON(w, report)
	} else {
		err = text(w)
	}
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJSONFile writes v as indented JSON to path.
func writeJSONFile(path string, v any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeJSON(f, v); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
