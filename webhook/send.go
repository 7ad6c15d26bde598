package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tusgate/tusgate/store"
)

// result is the outcome of one request.
type result struct {
	ok bool
	// msg says why it failed, without secrets (it is stored and logged).
	msg string
	// retryAfter is the wait a 429 or 503 asked for (capped), or zero.
	retryAfter time.Duration
}

// send POSTs event ev of upload u once.
func (d *Dispatcher) send(ctx context.Context, u *store.Upload, ev store.Event) result {
	body, err := json.Marshal(NewPayload(u, ev))
	if err != nil {
		return result{msg: fmt.Sprintf("encode body: %v", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return result{msg: "build request: " + d.scrub(err.Error())}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tusgate")
	req.Header.Set(HeaderSignature, Sign(d.cfg.Secret, body))
	req.Header.Set(HeaderEventID, ev.ID)
	req.Header.Set(HeaderEventType, string(ev.Type))
	req.Header.Set(HeaderAttempt, strconv.Itoa(ev.Attempts+1))

	start := time.Now()
	resp, err := d.client.Do(req)
	d.m.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		return result{msg: d.describe(err)}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyRead))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return result{ok: true}
	}
	res := result{msg: "HTTP " + resp.Status}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		res.msg += " (redirects are not followed)"
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), d.cfg.Now())
	}
	return res
}

// parseRetryAfter reads a Retry-After header (seconds or an HTTP date),
// capped at maxRetryAfter; zero when absent or malformed.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		d = time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// describe turns a client error into a message without the URL (Go's
// *url.Error quotes it, credentials included).
func (d *Dispatcher) describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Sprintf("no answer within %v", d.cfg.Timeout)
		}
		err = ue.Err
	}
	return d.scrub(err.Error())
}

// scrub removes from msg anything of the URL that may be secret: its user
// info and its query, raw and decoded.
func (d *Dispatcher) scrub(msg string) string {
	u, err := url.Parse(d.cfg.URL)
	if err != nil {
		return strings.ReplaceAll(msg, d.cfg.URL, "(webhook URL)")
	}
	var secrets []string
	if u.User != nil {
		secrets = append(secrets, u.User.String(), u.User.Username())
		if pw, ok := u.User.Password(); ok {
			secrets = append(secrets, pw)
		}
	}
	if u.RawQuery != "" {
		secrets = append(secrets, u.RawQuery)
		for _, vs := range u.Query() {
			secrets = append(secrets, vs...)
		}
	}
	msg = strings.ReplaceAll(msg, d.cfg.URL, d.endpoint)
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	return msg
}
