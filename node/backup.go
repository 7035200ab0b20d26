package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cagnotte/cagnotte/node/store"
	"github.com/cagnotte/cagnotte/p2p"
)

// A backup file is a text line naming the format, one line of JSON (a
// BackupHeader), the store as Badger's backup stream writes it, and a
// trailer line holding the SHA-256 of everything before it: a truncated or
// altered file is refused before anything is restored. It holds no secret
// (neither the node key nor the staff tokens, which never leave the
// machine through the API) but it does hold every card's history: keep it
// as private as the data dir.
const (
	backupMagic     = "CAGNOTTE-BACKUP 1\n"
	backupEndPrefix = "CAGNOTTE-END "
	backupTrailer   = len(backupEndPrefix) + 64 + 1
	// BackupWriteTimeout bounds how long one backup download may take.
	BackupWriteTimeout = time.Hour
	// maxBackupHeader bounds the header line (it carries the federation's
	// chain, a few KiB per venue).
	maxBackupHeader = 16 << 20
)

// Errors of backups and restores; test them with errors.Is.
var (
	// ErrBadBackup: the file is not a Cagnotte backup, or is truncated or
	// altered.
	ErrBadBackup = errors.New("not a valid cagnotte backup (truncated or altered?)")
	// ErrDataDirInUse: restore refuses a data dir that already holds a store.
	ErrDataDirInUse = errors.New("the data dir already holds a store: restore only into an empty one")
	// ErrWrongKey: the node key given to restore is not the backed-up venue's.
	ErrWrongKey = errors.New("the node key is not the key of the venue this backup is of")
)

// BackupHeader describes a backup.
type BackupHeader struct {
	// Venue is the backed-up venue's public key (hex) and PeerID its peer id.
	Venue  string `json:"venue"`
	PeerID string `json:"peer_id"`
	// VenueName and Federation name the venue and its federation.
	VenueName  string `json:"venue_name"`
	Federation string `json:"federation"`
	// Ops counts the ops the node held when the backup started and OwnSeq
	// is its own chain's head then (the backup may hold a few more).
	Ops    uint64 `json:"ops"`
	OwnSeq uint64 `json:"own_seq"`
	// Created is when the backup started (UTC).
	Created time.Time `json:"created"`
	// FederationBundle is the federation's chain the node was started with
	// (federation.ops; public).
	FederationBundle []byte `json:"federation_bundle"`
}

// WriteBackup writes a consistent backup of the node's store to w while
// the node keeps running (see store.Store.Backup) and returns its header.
func (n *Node) WriteBackup(ctx context.Context, w io.Writer) (BackupHeader, error) {
	h := BackupHeader{
		Venue:            n.Key().String(),
		Created:          n.cfg.Now().UTC(),
		FederationBundle: EncodeBundle(n.cfg.Federation),
	}
	if id, err := p2p.PeerID(n.Key()); err == nil {
		h.PeerID = id.String()
	}
	n.mu.RLock()
	h.Ops = n.set.Len()
	h.OwnSeq, _ = n.set.Head(n.Key())
	h.Federation = n.set.State.Name
	if v := n.set.State.Venues[n.Key()]; v != nil {
		h.VenueName = v.Name
	}
	n.mu.RUnlock()
	line, err := json.Marshal(h)
	if err != nil {
		return h, err
	}
	sum := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 64<<10)
	bw.WriteString(backupMagic)
	bw.Write(line)
	bw.WriteString("\n")
	if _, err := n.store.Backup(ctx, bw); err != nil {
		return h, fmt.Errorf("node: backup: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return h, fmt.Errorf("node: backup: %w", err)
	}
	if _, err := fmt.Fprintf(w, "%s%x\n", backupEndPrefix, sum.Sum(nil)); err != nil {
		return h, fmt.Errorf("node: backup: %w", err)
	}
	return h, nil
}

// withBackup serves GET /api/v1/backup (staff) in front of h, outside the
// API's request timeout: a season's store takes longer than a payment to
// stream. The answer is the backup file (application/octet-stream).
func (n *Node) withBackup(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /api/v1/backup", n.staff(n.handleBackup))
	mux.Handle("/", h)
	return mux
}

func (n *Node) handleBackup(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Now().Add(BackupWriteTimeout)); err != nil {
		n.log.Debug("backup: write deadline not extended", "err", err)
	}
	start := time.Now()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="cagnotte-%s-%s.backup"`, n.Key().Short(), start.UTC().Format("20060102T150405Z")))
	w.Header().Set("Cache-Control", "no-store")
	cw := &countWriter{w: w}
	h, err := n.WriteBackup(r.Context(), cw)
	if err != nil {
		// The status is already sent: the missing trailer tells the client.
		n.log.Warn("backup failed", "err", err, "bytes", cw.n)
		return
	}
	n.log.Info("backup served", "ops", h.Ops, "own_seq", h.OwnSeq, "bytes", cw.n, "took", time.Since(start).Round(time.Millisecond))
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n += int64(k)
	return k, err
}

// ReadBackupHeader checks a backup file whole (format line, checksum
// trailer) and returns its header and the offset and length of the store
// stream in it.
func ReadBackupHeader(f *os.File) (h BackupHeader, off, size int64, err error) {
	st, err := f.Stat()
	if err != nil {
		return h, 0, 0, err
	}
	total := st.Size()
	if total < int64(len(backupMagic)+backupTrailer) {
		return h, 0, 0, fmt.Errorf("%w: too short", ErrBadBackup)
	}
	trailer := make([]byte, backupTrailer)
	if _, err := f.ReadAt(trailer, total-int64(backupTrailer)); err != nil {
		return h, 0, 0, err
	}
	want, ok := bytes.CutPrefix(bytes.TrimSuffix(trailer, []byte("\n")), []byte(backupEndPrefix))
	if !ok || trailer[len(trailer)-1] != '\n' {
		return h, 0, 0, fmt.Errorf("%w: no end line (the download was cut short?)", ErrBadBackup)
	}
	sum := sha256.New()
	if _, err := io.Copy(sum, io.NewSectionReader(f, 0, total-int64(backupTrailer))); err != nil {
		return h, 0, 0, err
	}
	if hex.EncodeToString(sum.Sum(nil)) != string(want) {
		return h, 0, 0, fmt.Errorf("%w: checksum mismatch", ErrBadBackup)
	}
	br := bufio.NewReader(io.NewSectionReader(f, 0, total))
	magic := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != backupMagic {
		return h, 0, 0, fmt.Errorf("%w: unknown format line", ErrBadBackup)
	}
	line, err := readLine(br, maxBackupHeader)
	if err != nil {
		return h, 0, 0, fmt.Errorf("%w: header: %w", ErrBadBackup, err)
	}
	if err := json.Unmarshal(line, &h); err != nil {
		return h, 0, 0, fmt.Errorf("%w: header: %w", ErrBadBackup, err)
	}
	off = int64(len(backupMagic) + len(line) + 1)
	return h, off, total - int64(backupTrailer) - off, nil
}

func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, chunk...)
		if len(line) > max {
			return nil, errors.New("line too long")
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// RestoreConfig says what to restore where.
type RestoreConfig struct {
	// Backup is the backup file (written by WriteBackup). Required.
	Backup string
	// DataDir is the node's data dir; its store must be absent or empty.
	// Required.
	DataDir string
	// KeyFile, if set, is copied to DataDir/node.key after checking that it
	// is the backed-up venue's key. Default: DataDir/node.key must already
	// be that key, or be put there before the node starts.
	KeyFile string
	// TokensFile, if set, is copied to DataDir/staff-tokens.
	TokensFile string
	// Logger receives the logs. Default slog.Default().
	Logger *slog.Logger
}

// Restore restores a backup into an empty data dir: the store, the
// federation's chain (federation.ops, if absent) and, if given, the node
// key and staff tokens. A node started on it signs nothing until a peer
// has given back its own ops made after the backup (the sign gate).
func Restore(ctx context.Context, cfg RestoreConfig) (BackupHeader, error) {
	if cfg.Backup == "" || cfg.DataDir == "" {
		return BackupHeader{}, errors.New("restore: the backup file and the data dir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	f, err := os.Open(cfg.Backup)
	if err != nil {
		return BackupHeader{}, fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	h, off, size, err := ReadBackupHeader(f)
	if err != nil {
		return h, fmt.Errorf("restore %s: %w", cfg.Backup, err)
	}
	storeDir := filepath.Join(cfg.DataDir, StoreDir)
	if entries, err := os.ReadDir(storeDir); err == nil && len(entries) > 0 {
		return h, fmt.Errorf("restore: %s: %w", storeDir, ErrDataDirInUse)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return h, fmt.Errorf("restore: %w", err)
	}
	keyPath := filepath.Join(cfg.DataDir, KeyFile)
	if cfg.KeyFile != "" {
		if err := checkKey(cfg.KeyFile, h.Venue); err != nil {
			return h, err
		}
		if _, err := os.Stat(keyPath); err == nil {
			if err := checkKey(keyPath, h.Venue); err != nil {
				return h, fmt.Errorf("restore: %s holds another key: %w", keyPath, err)
			}
		} else if err := copyFile(cfg.KeyFile, keyPath); err != nil {
			return h, fmt.Errorf("restore: node key: %w", err)
		}
	} else if _, err := os.Stat(keyPath); err == nil {
		if err := checkKey(keyPath, h.Venue); err != nil {
			return h, err
		}
	}
	if cfg.TokensFile != "" {
		if err := copyFile(cfg.TokensFile, filepath.Join(cfg.DataDir, TokensFile)); err != nil {
			return h, fmt.Errorf("restore: staff tokens: %w", err)
		}
	}
	if fp := filepath.Join(cfg.DataDir, FederationFile); len(h.FederationBundle) > 0 {
		if _, err := os.Stat(fp); errors.Is(err, os.ErrNotExist) {
			if _, err := DecodeBundle(h.FederationBundle); err != nil {
				return h, fmt.Errorf("restore: %w: federation chain: %w", ErrBadBackup, err)
			}
			if err := WriteFileAtomic(fp, h.FederationBundle, 0o644); err != nil {
				return h, fmt.Errorf("restore: %w", err)
			}
		}
	}
	if err := store.Restore(ctx, storeDir, io.NewSectionReader(f, off, size), cfg.Logger); err != nil {
		return h, fmt.Errorf("restore: %w", err)
	}
	cfg.Logger.Info("backup restored", "venue", h.VenueName, "ops", h.Ops, "own_seq", h.OwnSeq, "created", h.Created, "data", cfg.DataDir)
	return h, nil
}

// checkKey checks that the key file at path is the venue's key (hex).
func checkKey(path, venue string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("restore: node key: %w", err)
	}
	k, _, err := LoadOrCreateKey(path)
	if err != nil {
		return fmt.Errorf("restore: node key %s: %w", path, err)
	}
	if k.Public().String() != venue {
		return fmt.Errorf("restore: %s is %s, the backup is of %s: %w", path, k.Public().Short(), shortHex(venue), ErrWrongKey)
	}
	return nil
}

func shortHex(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return WriteFileAtomic(to, b, 0o600)
}
