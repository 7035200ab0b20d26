package node

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// A bundle is a text file of ops, one base64 op per line, '#' comments
// allowed. Maintainers hand each venue the federation's chain (genesis and
// admissions up to the venue's own) as a bundle.

// MaxBundleOps bounds how many ops a bundle file may hold.
const MaxBundleOps = 100000

// EncodeBundle renders ops as a bundle.
func EncodeBundle(ops []crdt.Op) []byte {
	var b bytes.Buffer
	b.WriteString("# cagnotte federation bundle: one op per line, base64\n")
	for i := range ops {
		b.WriteString(base64.StdEncoding.EncodeToString(ops[i].Encode()))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// DecodeBundle parses a bundle. Ops are decoded, not verified: the op set
// verifies them when they are added.
func DecodeBundle(p []byte) ([]crdt.Op, error) {
	var ops []crdt.Op
	sc := bufio.NewScanner(bytes.NewReader(p))
	sc.Buffer(make([]byte, 0, 8192), 2*crdt.MaxOpSize)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if len(ops) >= MaxBundleOps {
			return nil, fmt.Errorf("bundle: more than %d ops", MaxBundleOps)
		}
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("bundle line %d: %w", line, err)
		}
		op, err := crdt.DecodeOp(raw)
		if err != nil {
			return nil, fmt.Errorf("bundle line %d: %w", line, err)
		}
		ops = append(ops, op)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return ops, nil
}

// ReadBundle reads a bundle file.
func ReadBundle(path string) ([]crdt.Op, error) {
	p, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ops, err := DecodeBundle(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(ops) == 0 || ops[0].Kind != crdt.KindGenesis {
		return nil, fmt.Errorf("%s: a federation bundle starts with the genesis", path)
	}
	return ops, nil
}

// WriteFileAtomic writes a file through a temporary file and a rename, so a
// crash leaves the old or the new content, never half.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// LoadOrCreateKey reads an Ed25519 seed (hex) from path, creating a new
// random key there (mode 0600) if the file does not exist.
func LoadOrCreateKey(path string) (*crdt.Signer, bool, error) {
	p, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		seed := make([]byte, 32)
		if _, err := rand.Read(seed); err != nil {
			return nil, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, err
		}
		if err := WriteFileAtomic(path, []byte(hex.EncodeToString(seed)+"\n"), 0o600); err != nil {
			return nil, false, fmt.Errorf("write key: %w", err)
		}
		s, err := crdt.SignerFromSeed(seed)
		return s, true, err
	}
	if err != nil {
		return nil, false, err
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(p)))
	if err != nil {
		return nil, false, fmt.Errorf("%s: key is not hex: %w", path, err)
	}
	s, err := crdt.SignerFromSeed(seed)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	return s, false, nil
}

// Federation is the maintainers' side of a federation: its signing key and
// its chain of ops (genesis, admissions, revocations, settings), kept in a
// directory as key (hex seed, 0600) and chain.ops (a bundle).
type Federation struct {
	Dir    string
	signer *crdt.Signer
	ops    []crdt.Op
	set    *crdt.OpSet
	log    *crdt.MemLog
	now    func() time.Time
}

// Federation file names inside its directory.
const (
	FederationKeyFile   = "federation.key"
	FederationChainFile = "chain.ops"
)

// InitFederation creates a federation in dir: a new key and the genesis.
// It refuses to overwrite an existing federation.
func InitFederation(dir string, g crdt.Genesis, now func() time.Time) (*Federation, error) {
	if now == nil {
		now = time.Now
	}
	if _, err := os.Stat(filepath.Join(dir, FederationChainFile)); err == nil {
		return nil, fmt.Errorf("%s already holds a federation", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	signer, _, err := LoadOrCreateKey(filepath.Join(dir, FederationKeyFile))
	if err != nil {
		return nil, err
	}
	f := &Federation{Dir: dir, signer: signer, now: now}
	f.log = crdt.NewMemLog()
	f.set = crdt.NewOpSet(crdt.Config{Federation: signer.Public(), Log: f.log})
	if _, err := f.append(&g); err != nil {
		return nil, err
	}
	return f, nil
}

// OpenFederation loads a federation directory.
func OpenFederation(dir string, now func() time.Time) (*Federation, error) {
	if now == nil {
		now = time.Now
	}
	if _, err := os.Stat(filepath.Join(dir, FederationKeyFile)); err != nil {
		return nil, fmt.Errorf("%s holds no federation (run federation init): %w", dir, err)
	}
	signer, _, err := LoadOrCreateKey(filepath.Join(dir, FederationKeyFile))
	if err != nil {
		return nil, err
	}
	ops, err := ReadBundle(filepath.Join(dir, FederationChainFile))
	if err != nil {
		return nil, err
	}
	f := &Federation{Dir: dir, signer: signer, now: now, log: crdt.NewMemLog()}
	f.set = crdt.NewOpSet(crdt.Config{Federation: signer.Public(), Log: f.log})
	for _, op := range ops {
		if _, err := f.set.Add(op); err != nil {
			return nil, fmt.Errorf("%s: %w", FederationChainFile, err)
		}
		if err := f.log.Append(op); err != nil {
			return nil, err
		}
	}
	f.ops = ops
	return f, nil
}

// Public returns the federation key.
func (f *Federation) Public() crdt.PublicKey { return f.signer.Public() }

// Ops returns the federation's chain.
func (f *Federation) Ops() []crdt.Op { return f.ops }

// State returns the folded federation state (venues, settings).
func (f *Federation) State() *crdt.State { return f.set.State }

// Bundle returns the chain as a bundle, ready to hand to a venue.
func (f *Federation) Bundle() []byte { return EncodeBundle(f.ops) }

func (f *Federation) append(b crdt.Body) (crdt.Op, error) {
	seq, head := f.set.Head(f.signer.Public())
	clock := crdt.NewClock(func() int64 { return f.now().UnixMilli() })
	if len(f.ops) > 0 {
		clock.Observe(f.ops[len(f.ops)-1].HLC)
	}
	op := crdt.NewAuthor(f.signer, clock, seq, head).Make(b)
	if _, err := f.set.Add(op); err != nil {
		return op, err
	}
	if err := f.log.Append(op); err != nil {
		return op, err
	}
	f.ops = append(f.ops, op)
	if err := WriteFileAtomic(filepath.Join(f.Dir, FederationChainFile), f.Bundle(), 0o644); err != nil {
		return op, fmt.Errorf("save chain: %w", err)
	}
	return op, nil
}

// Admit admits a venue node key under a name.
func (f *Federation) Admit(venue crdt.PublicKey, name string) (crdt.Op, error) {
	if v := f.set.State.Venues[venue]; v != nil {
		return crdt.Op{}, fmt.Errorf("venue %s is already admitted as %q", venue.Short(), v.Name)
	}
	return f.append(&crdt.Admit{Venue: venue, Name: name})
}

// Revoke revokes a venue: its ops after afterSeq stop counting. A venue
// already revoked is refused (ErrAlreadyRevoked).
func (f *Federation) Revoke(venue crdt.PublicKey, afterSeq uint64, reason string) (crdt.Op, error) {
	return f.RevokeAt(venue, afterSeq, crdt.OpID{}, reason)
}

// ErrAlreadyRevoked is returned when revoking a venue revoked already.
var ErrAlreadyRevoked = errors.New("venue already revoked")

// RevokeAt is Revoke pinning the venue's history: head, when not zero, is
// the id of the venue's op at afterSeq (as a node's sync status shows it),
// so that only that op and its ancestors count.
func (f *Federation) RevokeAt(venue crdt.PublicKey, afterSeq uint64, head crdt.OpID, reason string) (crdt.Op, error) {
	v := f.set.State.Venues[venue]
	if v == nil {
		return crdt.Op{}, fmt.Errorf("venue %s is not a member", venue.Short())
	}
	if v.Revoked {
		return crdt.Op{}, fmt.Errorf("%w: %q was revoked after its op %d", ErrAlreadyRevoked, v.Name, v.RevokedAfter)
	}
	if afterSeq == 0 {
		head = crdt.OpID{}
	}
	return f.append(&crdt.Revoke{Venue: venue, AfterSeq: afterSeq, Reason: reason, Head: head})
}

// FederationVenue is one venue of the federation as the maintainers' chain
// records it.
type FederationVenue struct {
	Name   string         `json:"name"`
	Key    crdt.PublicKey `json:"key"`
	PeerID string         `json:"peer_id"`
	// AdmittedSeq is the federation op that admitted the venue, made at
	// AdmittedAt.
	AdmittedSeq uint64    `json:"admitted_seq"`
	AdmittedAt  time.Time `json:"admitted_at"`
	// Revoked venues count only their ops up to RevokedAfter.
	Revoked      bool   `json:"revoked"`
	RevokedAfter uint64 `json:"revoked_after_seq,omitempty"`
	RevokeReason string `json:"revoke_reason,omitempty"`
}

// Venues lists the venues in the order they were admitted. peerID
// renders a key as a peer id (p2p.PeerID; node/federation.go stays free of
// libp2p).
func (f *Federation) Venues(peerID func(crdt.PublicKey) string) []FederationVenue {
	var out []FederationVenue
	for i := range f.ops {
		op := &f.ops[i]
		if op.Kind != crdt.KindAdmit {
			continue
		}
		b, err := op.Decode()
		a, ok := b.(*crdt.Admit)
		if err != nil || !ok {
			continue
		}
		fv := FederationVenue{Name: a.Name, Key: a.Venue, AdmittedSeq: op.Seq, AdmittedAt: time.UnixMilli(op.HLC.Millis()).UTC()}
		if peerID != nil {
			fv.PeerID = peerID(a.Venue)
		}
		if v := f.set.State.Venues[a.Venue]; v != nil && v.Revoked {
			fv.Revoked, fv.RevokedAfter, fv.RevokeReason = true, v.RevokedAfter, v.RevokeReason
		}
		out = append(out, fv)
	}
	return out
}

// ChangeSettings replaces the federation settings.
func (f *Federation) ChangeSettings(s crdt.Settings) (crdt.Op, error) {
	return f.append(&crdt.SettingsChange{Settings: s})
}
