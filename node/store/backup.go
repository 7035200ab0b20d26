package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/dgraph-io/badger/v4"
)

// ErrNotEmpty is returned by Restore for a directory that already holds
// files: a backup is only ever restored into an empty store directory.
var ErrNotEmpty = errors.New("store: restore into a directory that is not empty")

// Backup writes a consistent copy of the whole store to w, in Badger's
// backup format, as of one instant: every commit that returned before
// Backup started is in it, and no commit is half in it (the copy is what a
// crash at that instant would have left, which the store recovers from).
// The store keeps serving reads and commits meanwhile. It returns the
// Badger version the copy was taken at. Cancelling ctx stops the copy (w
// then holds a truncated backup that Restore refuses).
func (s *Store) Backup(ctx context.Context, w io.Writer) (uint64, error) {
	if err := s.acquire(); err != nil {
		return 0, err
	}
	defer s.release()
	stream := s.db.NewStream()
	stream.LogPrefix = "store backup"
	// Two goroutines, not Badger's 8: the node keeps its memory (and a
	// small machine its cores) for the tills while the copy runs.
	stream.NumGo = 2
	version, err := stream.Backup(ctxWriter{ctx: ctx, w: w}, 0)
	if err != nil {
		return 0, fmt.Errorf("store: backup: %w", err)
	}
	return version, nil
}

// Restore loads a backup written by Backup into the store directory dir,
// which must be absent or empty (else ErrNotEmpty), and closes it. A
// truncated or corrupt backup fails, and leaves dir to be removed.
func Restore(ctx context.Context, dir string, r io.Reader, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("store: restore: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("%w: %s", ErrNotEmpty, dir)
	}
	cfg := Config{Dir: dir, Logger: log}
	db, err := badger.Open(badgerOptions(cfg, log.With("component", "store")))
	if err != nil {
		return fmt.Errorf("store: restore: open %s: %w", dir, err)
	}
	lerr := db.Load(ctxReader{ctx: ctx, r: r}, 16)
	if cerr := db.Close(); cerr != nil && lerr == nil {
		lerr = cerr
	}
	if lerr != nil {
		return fmt.Errorf("store: restore into %s: %w", dir, lerr)
	}
	// Check that what was loaded is a store of this format.
	s, err := Open(cfg)
	if err != nil {
		return fmt.Errorf("store: restored %s does not open: %w", dir, err)
	}
	return s.Close()
}

// ctxWriter fails writes once its context is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// ctxReader fails reads once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
