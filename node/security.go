package node

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"time"
)

// SecurityConfig bounds what a hostile client on the venue's network can
// try over HTTP. Zero fields take the documented defaults.
type SecurityConfig struct {
	// AuthFailureBurst is how many wrong staff tokens (API bearer tokens,
	// point of sale sign-ins) one client address may present in a row;
	// after that it may try once per AuthFailureEvery, and is answered
	// 429 with Retry-After meanwhile. Default 20.
	AuthFailureBurst int
	// AuthFailureEvery is the refill period of the staff bucket. Default 3 s.
	AuthFailureEvery time.Duration
	// HolderFailureBurst is the same for card holder tokens (holder pages
	// and GET /api/v1/holder/{token} answering 404). Default 30.
	HolderFailureBurst int
	// HolderFailureEvery is the refill period of the holder bucket.
	// Default 2 s.
	HolderFailureEvery time.Duration
	// MaxClients bounds the client addresses tracked per bucket. Default
	// 10,000.
	MaxClients int
}

func (c *SecurityConfig) setDefaults() {
	if c.AuthFailureBurst <= 0 {
		c.AuthFailureBurst = 20
	}
	if c.AuthFailureEvery <= 0 {
		c.AuthFailureEvery = 3 * time.Second
	}
	if c.HolderFailureBurst <= 0 {
		c.HolderFailureBurst = 30
	}
	if c.HolderFailureEvery <= 0 {
		c.HolderFailureEvery = 2 * time.Second
	}
	if c.MaxClients <= 0 {
		c.MaxClients = 10000
	}
}

// Security headers set on every answer. The web pages (node/web.go) set
// the same policy on theirs; this one covers everything else (the JSON
// API, static files, error pages), and keeps the pages working if one
// forgets it: same-origin scripts, styles and images (plus data: images),
// no plugins, no framing, forms to this origin only.
const contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

var securityHeaders = [][2]string{
	{"Content-Security-Policy", contentSecurityPolicy},
	{"X-Content-Type-Options", "nosniff"},
	{"X-Frame-Options", "DENY"},
	{"Referrer-Policy", "same-origin"},
	{"Cross-Origin-Opener-Policy", "same-origin"},
	{"Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"},
}

// secure wraps the node's whole HTTP handler: security headers on every
// answer, and the failure limits on staff and card holder tokens.
func (n *Node) secure(h http.Handler) http.Handler {
	cfg := n.cfg.Security
	cfg.setDefaults()
	staff := newFailureLimiter(cfg.AuthFailureBurst, cfg.AuthFailureEvery, cfg.MaxClients, time.Now)
	holder := newFailureLimiter(cfg.HolderFailureBurst, cfg.HolderFailureEvery, cfg.MaxClients, time.Now)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		for _, kv := range securityHeaders {
			hd.Set(kv[0], kv[1])
		}
		client := clientAddr(r)
		credential := presentsStaffCredential(r)
		holderPath := isHolderPath(r.URL.Path)
		var lim *failureLimiter
		switch {
		case credential:
			lim = staff
		case holderPath:
			lim = holder
		}
		if lim != nil {
			if d := lim.wait(client); d > 0 {
				secs := int(math.Ceil(d.Seconds()))
				hd.Set("Retry-After", fmt.Sprint(secs))
				writeError(w, apiErr(http.StatusTooManyRequests, "too_many_failures",
					fmt.Sprintf("too many wrong tokens from this address; try again in %d s", secs)))
				n.log.Warn("http: client refused after repeated token failures", "remote", client, "path", routeLabel(r))
				return
			}
		}
		sw := &secWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		switch {
		case credential && sw.status == http.StatusUnauthorized:
			staff.fail(client)
		case holderPath && sw.status == http.StatusNotFound:
			holder.fail(client)
		}
	})
}

// presentsStaffCredential says whether r carries a token to check: a
// bearer token, or a point of sale sign-in. (Expired session cookies are
// not guesses: sessions are random 256-bit ids.)
func presentsStaffCredential(r *http.Request) bool {
	return r.Header.Get("Authorization") != "" || (r.Method == http.MethodPost && r.URL.Path == "/pos/login")
}

// isHolderPath says whether path carries a card holder token.
func isHolderPath(path string) bool {
	return strings.HasPrefix(path, "/api/v1/holder/") || strings.HasPrefix(path, "/c/")
}

// routeLabel names a request for logs without the tokens its path may
// hold.
func routeLabel(r *http.Request) string {
	if isHolderPath(r.URL.Path) {
		if strings.HasPrefix(r.URL.Path, "/c/") {
			return r.Method + " /c/…"
		}
		return r.Method + " /api/v1/holder/…"
	}
	return r.Method + " " + r.URL.Path
}

// clientAddr is the client's IP address (without the port): the unit the
// limits count by. A reverse proxy in front of the node makes every
// client one address; the node trusts no forwarding header.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// secWriter records the status; it passes Flush and Unwrap through, so
// streams and http.ResponseController work behind it.
type secWriter struct {
	http.ResponseWriter
	status int
}

func (s *secWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *secWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// Flush sends what is buffered (server-sent events).
func (s *secWriter) Flush() {
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}

// Unwrap returns the wrapped writer (for http.ResponseController).
func (s *secWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
