package benchkit

import (
	"fmt"
	"math"
	"slices"
)

// Stat is the spread of one figure over runs.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// N is the number of runs.
	N int `json:"n"`
}

// NewStat returns the spread of vs, which must not be empty; the median of
// an even count is the mean of the middle two. vs is left as it is.
func NewStat(vs []float64) Stat {
	s := slices.Clone(vs)
	slices.Sort(s)
	st := Stat{Min: s[0], Max: s[len(s)-1], N: len(s)}
	if len(s)%2 == 1 {
		st.Median = s[len(s)/2]
	} else {
		st.Median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return st
}

// Summarize returns the spread of every figure over runs, each run's
// figures by key; a key some runs lack is summarised over those that have
// it. The map is empty, not nil, when there are no runs.
func Summarize(runs []map[string]float64) map[string]Stat {
	values := map[string][]float64{}
	for _, m := range runs {
		for k, v := range m {
			values[k] = append(values[k], v)
		}
	}
	out := make(map[string]Stat, len(values))
	for k, vs := range values {
		out[k] = NewStat(vs)
	}
	return out
}

// FormatStat renders a table cell: "n/a" for nil, the median alone when
// the runs agree (or there is one), else "median [min–max]", each number
// formatted with format (nil: FormatNum).
func FormatStat(st *Stat, format func(float64) string) string {
	if st == nil {
		return "n/a"
	}
	if format == nil {
		format = FormatNum
	}
	if st.N == 1 || st.Min == st.Max {
		return format(st.Median)
	}
	return format(st.Median) + " [" + format(st.Min) + "–" + format(st.Max) + "]"
}

// FormatNum prints v with about three significant digits: 1234, 12.3,
// 1.23, 0.123.
func FormatNum(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
