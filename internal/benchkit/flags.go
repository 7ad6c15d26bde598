package benchkit

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
)

// SizeValue is a flag.Value holding a byte size written like 64MiB, 1GiB
// or 1.5MB, between 1 byte and Max.
type SizeValue struct {
	// P receives the size.
	P *int64
	// Max is the largest size accepted, in bytes.
	Max int64
}

// String returns the size as IBytes writes it.
func (s SizeValue) String() string {
	if s.P == nil {
		return ""
	}
	return IBytes(*s.P)
}

// Set parses v into *s.P.
func (s SizeValue) Set(v string) error {
	n, err := humanize.ParseBytes(v)
	if err != nil {
		return fmt.Errorf("not a size (such as 64MiB): %w", err)
	}
	if n == 0 || n > uint64(s.Max) {
		return fmt.Errorf("must be between 1 byte and %s", IBytes(s.Max))
	}
	*s.P = int64(n)
	return nil
}

// IBytes formats n as 64MiB, 1GiB, 640KiB, and a size that is not a whole
// number of KiB, MiB, GiB, TiB or PiB with three significant digits, as
// 1.5MiB.
func IBytes(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 50, "PiB"}, {1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strings.ReplaceAll(humanize.IBytes(uint64(n)), " ", "")
}

// ParseFlags parses args (without the program name) with fs, which must
// use flag.ContinueOnError, and refuses positional arguments. It returns
// false and no error when the user asked for --help (fs printed the
// usage).
func ParseFlags(fs *flag.FlagSet, args []string) (bool, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, nil
		}
		return false, err
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return true, nil
}

// ApplyUnset calls the function of every flag named in defaults that was
// not set on fs's command line: a preset such as --quick, where flags given
// explicitly win. fs must be parsed; a name fs does not define panics
// (a programming error).
func ApplyUnset(fs *flag.FlagSet, defaults map[string]func()) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, apply := range defaults {
		if fs.Lookup(name) == nil {
			panic("benchkit.ApplyUnset: no flag --" + name)
		}
		if !set[name] {
			apply()
		}
	}
}

// QuoteCommand renders a command line as a shell would read it: name in
// place of args[0] (whose directory is a temporary one under `go run`),
// then args[1:], each quoted when it holds a character the shell treats
// specially. It returns "" for no args.
func QuoteCommand(name string, args []string) string {
	if len(args) == 0 {
		return ""
	}
	parts := []string{name}
	for _, a := range args[1:] {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
