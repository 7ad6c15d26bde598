package auth_test

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tusgate/tusgate/auth"
)

// A platform signs a grant for a user; the gateway verifies the grant the
// client sends on each tus request.
func ExampleVerifier_Verify() {
	secret := []byte("the --grant-secret, 32 bytes or more, shared with the platform")
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

	// The platform's backend.
	grant, err := auth.Sign(secret, auth.Grant{
		Subject:   "user-42",
		ExpiresAt: now.Add(15 * time.Minute),
		MaxSize:   2 << 30,
		FileTypes: []string{"video/"},
		Metadata:  map[string]string{"courseId": "c-7"},
	})
	if err != nil {
		panic(err)
	}

	// The gateway.
	v, err := auth.NewVerifier(secret)
	if err != nil {
		panic(err)
	}
	r, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:8080/files/", nil)
	r.Header.Set("Authorization", "Bearer "+grant)
	raw, err := auth.FromRequest(r)
	if err != nil {
		panic(err)
	}
	g, err := v.Verify(raw, now)
	if err != nil {
		panic(err)
	}
	fmt.Println(g.Subject, g.ExpiresAt.Format(time.RFC3339), g.Metadata["courseId"])
	fmt.Println(g.AllowsSize(3<<30), g.AllowsFileType("video/mp4", nil), g.AllowsFileType("image/png", nil))

	// Twenty minutes later.
	_, err = v.Verify(raw, now.Add(20*time.Minute))
	fmt.Println(errors.Is(err, auth.ErrExpiredGrant), err)
	// Output:
	// user-42 2026-01-01T12:15:00Z c-7
	// false true false
	// true the upload grant expired at 2026-01-01T12:15:00Z: ask the platform for a new one
}
