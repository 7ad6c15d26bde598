// Package tuslog bridges tusd's logger to zap.
//
// tusd v2 logs through a *golang.org/x/exp/slog.Logger, a different type from
// the standard library's log/slog. Handler implements that package's Handler
// interface on top of a zapcore.Core, so tusd's records end up in the
// process's zap logger with their attributes and groups.
package tuslog

import (
	"context"
	"runtime"
	"slices"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/exp/slog"
)

// Handler is a slog.Handler (of golang.org/x/exp/slog) that writes to zap.
//
// By default levels map with Level, to the nearest zap level at or below
// them: below Info is Debug, below Warn is Info, below Error is Warn, and Error
// and above is Error. WithLevels changes the mapping (see QuietLevel).
// Groups become zap namespaces (or nested objects for group attributes); a
// group that ends up with no attributes is left out, as slog requires.
type Handler struct {
	core zapcore.Core
	name string
	// level maps a record's level to zap's.
	level func(slog.Level) zapcore.Level
	// groups opened with WithGroup that hold no attribute yet. They are
	// turned into zap namespaces only when an attribute arrives, so an empty
	// group never shows.
	groups []string
	// pre holds the fields of WithAttrs (namespaces included), written
	// ahead of each record's own. They are kept here rather than given to
	// core.With, which encodes them at once: tusd adds attributes to its
	// logger on every request, and at the usual levels none of its
	// per-request records is written.
	pre []zapcore.Field
}

var _ slog.Handler = (*Handler)(nil)

// Option configures a Handler.
type Option func(*Handler)

// WithLevels makes the Handler map record levels to zap levels with f
// (default Level). A nil f keeps the default.
func WithLevels(f func(slog.Level) zapcore.Level) Option {
	return func(h *Handler) {
		if f != nil {
			h.level = f
		}
	}
}

// New returns a Handler writing to l's core under l's name.
func New(l *zap.Logger, opts ...Option) *Handler {
	h := &Handler{core: l.Core(), name: l.Name(), level: Level}
	for _, o := range opts {
		o(h)
	}
	return h
}

// NewLogger returns an x/exp/slog Logger writing to l, ready for tusd's
// handler.Config.Logger.
func NewLogger(l *zap.Logger, opts ...Option) *slog.Logger {
	return slog.New(New(l, opts...))
}

// Enabled reports whether zap would log a record of that level.
func (h *Handler) Enabled(_ context.Context, level slog.Level) bool {
	return h.core.Enabled(h.level(level))
}

// Handle writes the record to zap.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	ent := zapcore.Entry{
		Level:      h.level(r.Level),
		Time:       r.Time,
		LoggerName: h.name,
		Message:    r.Message,
	}
	ce := h.core.Check(ent, nil)
	if ce == nil {
		return nil
	}
	if r.PC != 0 {
		frames := runtime.CallersFrames([]uintptr{r.PC})
		f, _ := frames.Next()
		ce.Caller = zapcore.NewEntryCaller(f.PC, f.File, f.Line, true)
		ce.Caller.Function = f.Function
	}
	fields := make([]zapcore.Field, 0, len(h.pre)+len(h.groups)+r.NumAttrs())
	fields = append(fields, h.pre...)
	own := len(fields)
	r.Attrs(func(a slog.Attr) bool {
		fields = appendAttr(fields, a)
		return true
	})
	if len(fields) > own && len(h.groups) > 0 {
		fields = slices.Insert(fields, own, namespaces(h.groups)...)
	}
	ce.Write(fields...)
	return nil
}

// WithAttrs returns a Handler whose records carry attrs, in the current group.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var fields []zapcore.Field
	for _, a := range attrs {
		fields = appendAttr(fields, a)
	}
	if len(fields) == 0 {
		return h
	}
	c := *h
	c.pre = slices.Concat(h.pre, namespaces(h.groups), fields)
	c.groups = nil
	return &c
}

// WithGroup returns a Handler that nests later attributes under name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.groups = append(append([]string(nil), h.groups...), name)
	return &c
}

// Level maps a slog level to the zap level at or below it.
func Level(l slog.Level) zapcore.Level {
	switch {
	case l < slog.LevelInfo:
		return zapcore.DebugLevel
	case l < slog.LevelWarn:
		return zapcore.InfoLevel
	case l < slog.LevelError:
		return zapcore.WarnLevel
	default:
		return zapcore.ErrorLevel
	}
}

// QuietLevel maps a slog level like Level, except that Info-level records
// (Info up to, not including, Warn) become Debug: tusd logs every request at
// Info (RequestIncoming, ResponseOutgoing, ChunkWriteStart, …), which is
// noise in production. Warn and Error stay as they are.
func QuietLevel(l slog.Level) zapcore.Level {
	if l < slog.LevelWarn {
		return zapcore.DebugLevel
	}
	return Level(l)
}

func namespaces(groups []string) []zapcore.Field {
	fs := make([]zapcore.Field, 0, len(groups))
	for _, g := range groups {
		fs = append(fs, zap.Namespace(g))
	}
	return fs
}

// appendAttr converts a to zap fields following slog's rules: values are
// resolved, empty attributes and empty groups are dropped, and the attributes
// of a group with an empty key are inlined.
func appendAttr(fs []zapcore.Field, a slog.Attr) []zapcore.Field {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return fs
	}
	v := a.Value
	switch v.Kind() {
	case slog.KindGroup:
		attrs := v.Group()
		if len(attrs) == 0 {
			return fs
		}
		if a.Key == "" {
			for _, ga := range attrs {
				fs = appendAttr(fs, ga)
			}
			return fs
		}
		return append(fs, zap.Object(a.Key, group(attrs)))
	case slog.KindBool:
		return append(fs, zap.Bool(a.Key, v.Bool()))
	case slog.KindDuration:
		return append(fs, zap.Duration(a.Key, v.Duration()))
	case slog.KindFloat64:
		return append(fs, zap.Float64(a.Key, v.Float64()))
	case slog.KindInt64:
		return append(fs, zap.Int64(a.Key, v.Int64()))
	case slog.KindString:
		return append(fs, zap.String(a.Key, v.String()))
	case slog.KindTime:
		return append(fs, zap.Time(a.Key, v.Time()))
	case slog.KindUint64:
		return append(fs, zap.Uint64(a.Key, v.Uint64()))
	default:
		return append(fs, zap.Any(a.Key, v.Any()))
	}
}

// group marshals the attributes of a slog group as a zap object.
type group []slog.Attr

func (g group) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	var fs []zapcore.Field
	for _, a := range g {
		fs = appendAttr(fs, a)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	return nil
}
