package benchkit_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/tusgate/tusgate/internal/benchkit"
)

func TestNewStat(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want benchkit.Stat
	}{
		{"one", []float64{7}, benchkit.Stat{Median: 7, Min: 7, Max: 7, N: 1}},
		{"odd, unsorted", []float64{5, 1, 3}, benchkit.Stat{Median: 3, Min: 1, Max: 5, N: 3}},
		{"even: mean of the middle two", []float64{4, 1, 10, 2}, benchkit.Stat{Median: 3, Min: 1, Max: 10, N: 4}},
		{"negative", []float64{-2, -8}, benchkit.Stat{Median: -5, Min: -8, Max: -2, N: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			if got := benchkit.NewStat(in); got != tt.want {
				t.Errorf("NewStat(%v): got %+v, want %+v", tt.in, got, tt.want)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("NewStat changed its input: got %v, want %v", in, tt.in)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	got := benchkit.Summarize([]map[string]float64{
		{"a": 1, "b": 10},
		{"a": 3},
		{"a": 2, "b": 20},
	})
	want := map[string]benchkit.Stat{
		"a": {Median: 2, Min: 1, Max: 3, N: 3},
		"b": {Median: 15, Min: 10, Max: 20, N: 2},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Summarize: got %v, want %v", got, want)
	}
	if empty := benchkit.Summarize(nil); empty == nil || len(empty) != 0 {
		t.Errorf("Summarize(nil): got %#v, want an empty map", empty)
	}
}

func TestFormatNum(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{1234.5, "1234"},
		{100, "100"},
		{99.94, "99.9"},
		{10, "10.0"},
		{9.999, "10.00"},
		{1.234, "1.23"},
		{0.12345, "0.123"},
		{0, "0.000"},
		{-12.34, "-12.3"},
	}
	for _, tt := range tests {
		if got := benchkit.FormatNum(tt.in); got != tt.want {
			t.Errorf("FormatNum(%v): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatStat(t *testing.T) {
	pct := func(v float64) string { return fmt.Sprintf("%.0f%%", v) }
	tests := []struct {
		name   string
		st     *benchkit.Stat
		format func(float64) string
		want   string
	}{
		{"nil", nil, nil, "n/a"},
		{"one run", &benchkit.Stat{Median: 12.34, Min: 12.34, Max: 12.34, N: 1}, nil, "12.3"},
		{"runs agree", &benchkit.Stat{Median: 2, Min: 2, Max: 2, N: 3}, nil, "2.00"},
		{"spread", &benchkit.Stat{Median: 150, Min: 0.5, Max: 1500, N: 3}, nil, "150 [0.500–1500]"},
		{"own format", &benchkit.Stat{Median: 50, Min: 40, Max: 60, N: 3}, pct, "50% [40%–60%]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := benchkit.FormatStat(tt.st, tt.format); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
