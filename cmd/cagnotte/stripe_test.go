package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cagnotte/cagnotte/node"
)

func TestStripeFlagsConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "key")
	os.WriteFile(good, []byte("sk_test_fromfile\n"), 0o600)
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte("sk_test_open"), 0o644)
	os.Chmod(open, 0o644)
	cases := []struct {
		name    string
		flags   stripeFlags
		env     map[string]string
		key     string
		webhook string
		err     error
	}{
		{name: "no key: not a gateway"},
		{name: "from the environment", env: map[string]string{"STRIPE_SECRET_KEY": "sk_test_env", "STRIPE_WEBHOOK_SECRET": "whsec_env"}, key: "sk_test_env", webhook: "whsec_env"},
		{name: "file wins over the environment", flags: stripeFlags{keyFile: good}, env: map[string]string{"STRIPE_SECRET_KEY": "sk_test_env"}, key: "sk_test_fromfile"},
		{name: "file others may read", flags: stripeFlags{keyFile: open}, err: node.ErrSecretFileMode},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("STRIPE_SECRET_KEY", c.env["STRIPE_SECRET_KEY"])
			t.Setenv("STRIPE_WEBHOOK_SECRET", c.env["STRIPE_WEBHOOK_SECRET"])
			sc, err := c.flags.config()
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err %v, want %v", err, c.err)
				}
				return
			}
			if err != nil || sc.SecretKey != c.key || sc.WebhookSecret != c.webhook {
				t.Fatalf("%+v %v", sc, err)
			}
		})
	}
}
