package node

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cagnotte/cagnotte/crdt"
)

// DemoVenue is one venue of a local demo federation.
type DemoVenue struct {
	Name  string
	Dir   string
	Token string
	Key   crdt.PublicKey
}

var demoNames = []string{
	"La Guinguette", "Le Local", "Café des Arts", "La Friche", "Le Grand Bal",
	"L'Atelier", "La Cantine", "Le Hangar", "Les Halles", "Le Kiosque",
}

// DemoVenueName returns the name of the demo's i-th venue.
func DemoVenueName(i int) string {
	if i < len(demoNames) {
		return demoNames[i]
	}
	return fmt.Sprintf("Venue %d", i+1)
}

// PrepareDemo lays out a demo federation in dir with the embedded default
// settings: the federation (dir/federation) and one data directory per venue
// (dir/venue-N, with its key, staff token and federation bundle). It reuses
// what a previous run left there and adds venues if asked for more.
func PrepareDemo(dir string, venues int) ([]DemoVenue, error) {
	return PrepareFederation(dir, venues, crdt.DefaultSettings())
}

// PrepareFederation is PrepareDemo with the given federation settings
// (used when the federation is created; an existing one keeps its own).
func PrepareFederation(dir string, venues int, settings crdt.Settings) ([]DemoVenue, error) {
	if venues < 1 || venues > 100 {
		return nil, fmt.Errorf("demo: venues must be between 1 and 100, got %d", venues)
	}
	fdir := filepath.Join(dir, "federation")
	f, err := OpenFederation(fdir, nil)
	if err != nil {
		f, err = InitFederation(fdir, crdt.Genesis{Name: "Demo federation", Currency: "EUR", Settings: settings}, nil)
		if err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
	}
	out := make([]DemoVenue, venues)
	for i := range out {
		vdir := filepath.Join(dir, fmt.Sprintf("venue-%d", i+1))
		key, _, err := LoadOrCreateKey(filepath.Join(vdir, KeyFile))
		if err != nil {
			return nil, err
		}
		tok, err := EnsureToken(filepath.Join(vdir, TokensFile))
		if err != nil {
			return nil, err
		}
		name := DemoVenueName(i)
		if f.State().Venues[key.Public()] == nil {
			if _, err := f.Admit(key.Public(), name); err != nil {
				return nil, err
			}
		}
		out[i] = DemoVenue{Name: name, Dir: vdir, Token: tok, Key: key.Public()}
	}
	// Every venue gets the whole chain, so each knows all the others.
	for _, v := range out {
		if err := WriteFileAtomic(filepath.Join(v.Dir, FederationFile), f.Bundle(), 0o644); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// EnsureToken returns the first staff token in path, creating a random one
// (mode 0600) if there is none.
func EnsureToken(path string) (string, error) {
	if toks, err := ReadTokens(path); err == nil && len(toks) > 0 {
		return toks[0], nil
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := WriteFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	return tok, nil
}

// DemoPortsFile, in a kept demo's directory, records the API port of each
// venue so that the next run of the demo keeps the same addresses.
const DemoPortsFile = "demo-ports.json"

// DemoPorts are the ports a demo ran on, venue by venue.
type DemoPorts struct {
	API []int `json:"api"`
}

// LoadDemoPorts reads dir/demo-ports.json; a missing file is no ports.
func LoadDemoPorts(dir string) (DemoPorts, error) {
	var p DemoPorts
	b, err := os.ReadFile(filepath.Join(dir, DemoPortsFile))
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("demo: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("demo: %s: %w", DemoPortsFile, err)
	}
	return p, nil
}

// SaveDemoPorts writes dir/demo-ports.json.
func SaveDemoPorts(dir string, p DemoPorts) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, DemoPortsFile), append(b, '\n'), 0o644)
}

// WebPages are the addresses of a node's web pages.
type WebPages struct {
	// POS is the point of sale (staff sign in with a staff token).
	POS string `json:"pos"`
	// Agenda is the federated agenda.
	Agenda string `json:"agenda"`
	// Dashboard is the maintainers' sync dashboard.
	Dashboard string `json:"dashboard"`
	// Card is a card holder's page, when a holder token is known.
	Card string `json:"card,omitempty"`
}

// PagesAt returns the web pages of the node whose HTTP address is base
// (e.g. http://127.0.0.1:8080); holderToken, if not empty, gives the card
// holder's page of that token (any node of the federation opens it).
func PagesAt(base, holderToken string) WebPages {
	p := WebPages{POS: base + "/pos", Agenda: base + "/agenda", Dashboard: base + "/dashboard"}
	if holderToken != "" {
		p.Card = base + "/c/" + holderToken
	}
	return p
}
