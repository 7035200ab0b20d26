package nfc

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestSimReaderTapsOnceAndReportsRemoval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := NewSimReader("bar")
	tag, _ := NewSimTag("04A1B2C3D4E5F6", NTAG215)
	c := simCardOn(t, r, tag)
	if c.UID() != "04A1B2C3D4E5F6" || c.Type() != NTAG215 {
		t.Fatalf("card %s %s", c.UID(), c.Type())
	}
	// The card stays: the next Wait waits for another presentation.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	if _, err := r.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second wait with the same card: %v", err)
	}
	cancelShort()
	removed := make(chan error, 1)
	go func() { removed <- c.Removed(ctx) }()
	r.Remove()
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(ctx, 4, 1); !errors.Is(err, ErrCardRemoved) {
		t.Fatalf("read after removal: %v", err)
	}
	r.Close()
	if _, err := r.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("wait on a closed reader: %v", err)
	}
}

func TestSimTagKeptInAFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "card.json")
	tag, _ := NewSimTag("04A1B2C3D4E5F6", NTAG216)
	if err := tag.SaveTo(path); err != nil {
		t.Fatal(err)
	}
	c := simCardOn(t, NewSimReader("sim"), tag)
	st := testStamp(t, testSigner(t, 2), c.UID(), 4, 1234)
	if err := WriteStamp(ctx, c, st); err != nil {
		t.Fatal(err)
	}
	back, err := LoadSimTag(path)
	if err != nil {
		t.Fatal(err)
	}
	c2 := simCardOn(t, NewSimReader("sim"), back)
	got, err := ReadStamp(ctx, c2)
	if err != nil || !bytes.Equal(got, st) || back.Type() != NTAG216 {
		t.Fatalf("reloaded card: %v", err)
	}
}
