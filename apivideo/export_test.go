package apivideo

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
)

// SentByFile returns how many part bytes c sent with sendfile(2).
func SentByFile(c *Client) int64 { return c.sentByFile.Load() }

// TrustCert makes c's own transport (built by New) trust cert, for https
// tests against an httptest TLS server.
func TrustCert(c *Client, cert *x509.Certificate) {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c.httpClient.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool}
}
