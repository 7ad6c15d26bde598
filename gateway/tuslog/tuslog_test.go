package tuslog_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/exp/slog"
	"golang.org/x/exp/slog/slogtest"

	"github.com/tusgate/tusgate/gateway/tuslog"
)

// entryMap turns an observed zap entry into the map shape slogtest expects.
func entryMap(e observer.LoggedEntry) map[string]any {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range e.Context {
		f.AddTo(enc)
	}
	m := enc.Fields
	if !e.Time.IsZero() {
		m[slog.TimeKey] = e.Time
	}
	m[slog.LevelKey] = e.Level.String()
	m[slog.MessageKey] = e.Message
	return m
}

func TestSlogtest(t *testing.T) {
	tests := []struct {
		name string
		opts []tuslog.Option
	}{
		{"default levels", nil},
		{"quiet levels", []tuslog.Option{tuslog.WithLevels(tuslog.QuietLevel)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			h := tuslog.New(zap.New(core), tt.opts...)
			err := slogtest.TestHandler(h, func() []map[string]any {
				var ms []map[string]any
				for _, e := range logs.All() {
					ms = append(ms, entryMap(e))
				}
				return ms
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestQuietLevels(t *testing.T) {
	tests := []struct {
		in   slog.Level
		want zapcore.Level
	}{
		{slog.LevelDebug, zapcore.DebugLevel},
		{slog.LevelInfo, zapcore.DebugLevel},
		{slog.LevelInfo + 2, zapcore.DebugLevel},
		{slog.LevelWarn, zapcore.WarnLevel},
		{slog.LevelError - 1, zapcore.WarnLevel},
		{slog.LevelError, zapcore.ErrorLevel},
	}
	for _, tt := range tests {
		t.Run(tt.in.String(), func(t *testing.T) {
			if got := tuslog.QuietLevel(tt.in); got != tt.want {
				t.Errorf("QuietLevel(%v): got %v, want %v", tt.in, got, tt.want)
			}
			core, logs := observer.New(zapcore.DebugLevel)
			tuslog.NewLogger(zap.New(core), tuslog.WithLevels(tuslog.QuietLevel)).Log(t.Context(), tt.in, "m")
			if n := logs.Len(); n != 1 {
				t.Fatalf("got %d entries, want 1", n)
			}
			if got := logs.All()[0].Level; got != tt.want {
				t.Errorf("logged level: got %v, want %v", got, tt.want)
			}
		})
	}
	// With an Info core, tusd's Info records are dropped before any work.
	core, logs := observer.New(zapcore.InfoLevel)
	l := tuslog.NewLogger(zap.New(core), tuslog.WithLevels(tuslog.QuietLevel))
	if l.Enabled(t.Context(), slog.LevelInfo) {
		t.Errorf("quiet Enabled(Info) with an Info core: got true, want false")
	}
	l.Info("RequestIncoming")
	l.Warn("NetworkTimeoutError")
	if n := logs.Len(); n != 1 || logs.All()[0].Message != "NetworkTimeoutError" {
		t.Errorf("quiet logger with an Info core: got %d entries %v, want only the warning", n, logs.All())
	}
}

func TestLevels(t *testing.T) {
	tests := []struct {
		in   slog.Level
		want zapcore.Level
	}{
		{slog.LevelDebug - 4, zapcore.DebugLevel},
		{slog.LevelDebug, zapcore.DebugLevel},
		{slog.LevelInfo - 1, zapcore.DebugLevel},
		{slog.LevelInfo, zapcore.InfoLevel},
		{slog.LevelInfo + 2, zapcore.InfoLevel},
		{slog.LevelWarn, zapcore.WarnLevel},
		{slog.LevelError - 1, zapcore.WarnLevel},
		{slog.LevelError, zapcore.ErrorLevel},
		{slog.LevelError + 4, zapcore.ErrorLevel},
	}
	for _, tt := range tests {
		t.Run(tt.in.String(), func(t *testing.T) {
			if got := tuslog.Level(tt.in); got != tt.want {
				t.Errorf("Level(%v): got %v, want %v", tt.in, got, tt.want)
			}
			core, logs := observer.New(zapcore.DebugLevel)
			tuslog.NewLogger(zap.New(core)).Log(t.Context(), tt.in, "m")
			if n := logs.Len(); n != 1 {
				t.Fatalf("got %d entries, want 1", n)
			}
			if got := logs.All()[0].Level; got != tt.want {
				t.Errorf("logged level: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEnabledFollowsZap(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	l := tuslog.NewLogger(zap.New(core))
	ctx := t.Context()
	if l.Enabled(ctx, slog.LevelInfo) {
		t.Errorf("Enabled(Info) with a Warn core: got true, want false")
	}
	if !l.Enabled(ctx, slog.LevelError) {
		t.Errorf("Enabled(Error) with a Warn core: got false, want true")
	}
	l.Info("dropped")
	l.Warn("kept", "err", errors.New("boom"))
	if n := logs.Len(); n != 1 {
		t.Fatalf("got %d entries, want 1", n)
	}
	if got := logs.All()[0].ContextMap()["err"]; got != "boom" {
		t.Errorf("err field: got %v, want boom", got)
	}
}

func TestNameAndEmptyGroup(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	l := tuslog.NewLogger(zap.New(core).Named("tusd"))
	l.WithGroup("G").Info("no attrs")
	l.With("id", "abc").Info("with attrs", slog.Group("g", "n", 1))
	all := logs.All()
	if len(all) != 2 {
		t.Fatalf("got %d entries, want 2", len(all))
	}
	if got := all[0].LoggerName; got != "tusd" {
		t.Errorf("logger name: got %q, want tusd", got)
	}
	if m := entryMap(all[0]); m["G"] != nil {
		t.Errorf("empty group: got %v, want no key G", m["G"])
	}
	m := entryMap(all[1])
	if m["id"] != "abc" {
		t.Errorf("id: got %v, want abc", m["id"])
	}
	g, ok := m["g"].(map[string]any)
	if !ok || g["n"] != int64(1) {
		t.Errorf("group g: got %#v, want map with n=1", m["g"])
	}
}

// withCounter counts the calls to its core's With.
type withCounter struct {
	zapcore.Core
	calls *int
}

func (c withCounter) With(fs []zapcore.Field) zapcore.Core {
	*c.calls++
	return withCounter{c.Core.With(fs), c.calls}
}

func (c withCounter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// Attributes added with With cost nothing until a record is written (tusd
// adds some to its logger on every request, and at the usual levels writes
// none of that request's records), and then come out as before: ahead of
// the record's own, in their groups.
func TestWithAttrsIsLazy(t *testing.T) {
	var buf bytes.Buffer
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{MessageKey: "msg"})
	calls := 0
	core := withCounter{zapcore.NewCore(enc, zapcore.AddSync(&buf), zapcore.InfoLevel), &calls}
	l := tuslog.NewLogger(zap.New(core))

	req := l.With("method", "PATCH", "path", "/files/x").WithGroup("upload").With("id", "x")
	req.Debug("not written", "n", 1)
	if buf.Len() != 0 {
		t.Fatalf("a Debug record was written at Info: %s", buf.String())
	}
	req.Info("written", "offset", 5)
	if calls != 0 {
		t.Errorf("zap core With called %d times, want 0 (attributes encoded before any record needs them)", calls)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("output %q: %v", buf.String(), err)
	}
	want := map[string]any{
		"msg": "written", "method": "PATCH", "path": "/files/x",
		"upload": map[string]any{"id": "x", "offset": float64(5)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("record: got %v, want %v", got, want)
	}
}
