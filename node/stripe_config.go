package node

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	pstripe "github.com/cagnotte/cagnotte/node/stripe"
)

// StripeConfig makes a node a Stripe payment gateway (see docs/stripe.md).
// The zero value is a node without online top-ups. Zero fields take the
// documented defaults.
type StripeConfig struct {
	// SecretKey is the Stripe account's secret (or restricted) API key.
	// Empty: this node is not a gateway. Read it from the environment or a
	// file only readable by its owner (ReadSecretFile): it never goes into
	// the op set, the logs or a page.
	SecretKey string
	// WebhookSecret is the signing secret (whsec_…) of this gateway's
	// webhook endpoint, POST /api/v1/stripe/webhook. Required with
	// SecretKey.
	WebhookSecret string
	// PublicURL is this gateway's address as card holders' browsers reach
	// it (https://…, no trailing slash): Checkout sends them back to
	// PublicURL/c/<token>. Required with SecretKey.
	PublicURL string
	// GatewayURL is, on a node without a key, a gateway's PublicURL that
	// card holder pages point to ("online top-up available at …"). Empty:
	// the top-up button is hidden.
	GatewayURL string
	// BackendURL is Stripe's API base URL. Default https://api.stripe.com;
	// tests use stripe-mock.
	BackendURL string
	// Tolerance is how old a webhook's signed timestamp may be. Default
	// 5 minutes.
	Tolerance time.Duration
	// MinTopUp and MaxTopUp bound one online top-up, in cents. Defaults
	// 500 (5.00) and 10000 (100.00); the federation's balance ceiling
	// applies on top.
	MinTopUp, MaxTopUp int64
	// PaymentMethods lists Checkout's payment method types. Default: the
	// account's dynamic payment methods (card and the European methods
	// enabled in its dashboard: Bancontact, iDEAL, SEPA debit…).
	PaymentMethods []string
	// AutoApproveRefunds refunds a card holder's request without a staff
	// approval. Default false.
	AutoApproveRefunds bool
	// RetryInterval is how often refunds Stripe could not make are
	// retried. Default 1 minute.
	RetryInterval time.Duration
	// StaggerWindow spreads the gateways' credits of one payment: Stripe
	// sends each event to every endpoint at once, so each gateway first
	// waits a delay drawn from the PaymentIntent id and its own key
	// (below this window) for another gateway's credit to arrive. Usually
	// one op is made; two would still count once (and show as a
	// duplicate_ref conflict). Default 1 s; negative: no wait.
	StaggerWindow time.Duration

	// afterDurable, in tests, runs after a webhook's op is durable and
	// before the answer (the crash test kills the process there).
	afterDurable func()
}

// Gateway reports whether the config makes the node a gateway.
func (c *StripeConfig) Gateway() bool { return c.SecretKey != "" }

func (c *StripeConfig) setDefaults() error {
	if c.MinTopUp <= 0 {
		c.MinTopUp = 500
	}
	if c.MaxTopUp <= 0 {
		c.MaxTopUp = 10000
	}
	if c.MaxTopUp < c.MinTopUp {
		return fmt.Errorf("stripe: max top-up %d below the min %d", c.MaxTopUp, c.MinTopUp)
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = time.Minute
	}
	if c.Tolerance <= 0 {
		c.Tolerance = 5 * time.Minute
	}
	if c.StaggerWindow == 0 {
		c.StaggerWindow = time.Second
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	c.GatewayURL = strings.TrimRight(c.GatewayURL, "/")
	if !c.Gateway() {
		return nil
	}
	if c.WebhookSecret == "" {
		return fmt.Errorf("stripe: a gateway needs its webhook signing secret: %w", pstripe.ErrNoSecret)
	}
	if !strings.HasPrefix(c.PublicURL, "https://") && !strings.HasPrefix(c.PublicURL, "http://") {
		return errors.New("stripe: a gateway needs its public URL (https://…) for Checkout's return page")
	}
	return nil
}

// ErrSecretFileMode: a secret file others may read.
var ErrSecretFileMode = errors.New("secret file readable by others")

// ReadSecretFile reads a secret (a Stripe key) from a file that only its
// owner may read or write (mode 0600 or 0400), trimmed of spaces.
func ReadSecretFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%w: %s has mode %v; run chmod 600 %s", ErrSecretFileMode, path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	return s, nil
}
