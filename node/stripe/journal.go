package stripe

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// Journal is a gateway's durable memory of what is not in the op set:
// webhook failures kept for staff, refund requests and their progress. It
// is an append-only file of JSON lines, one record version a line, each
// fsync'd before Put returns; the last version of a record wins. A line
// torn by a crash is dropped at open. The file is rewritten (compacted)
// at open when most of its lines are old versions.
type Journal struct {
	mu    sync.Mutex
	path  string
	f     *os.File
	recs  map[string]json.RawMessage // kind + "/" + id → value
	order []string                   // keys in first-write order
	lines int
}

type journalLine struct {
	Kind string          `json:"k"`
	ID   string          `json:"id"`
	V    json.RawMessage `json:"v"`
}

// maxJournalLine bounds one record.
const maxJournalLine = 1 << 20

// OpenJournal opens (creating it if needed, mode 0600) the journal at path.
func OpenJournal(path string) (*Journal, error) {
	j := &Journal{path: path, recs: map[string]json.RawMessage{}}
	good, err := j.load()
	if err != nil {
		return nil, err
	}
	if j.lines > 64 && j.lines > 2*len(j.recs) {
		if err := j.compact(); err != nil {
			return nil, err
		}
		good = -1
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("stripe journal: %w", err)
	}
	if good >= 0 {
		// Drop a torn last line, so that appends start on a line of their own.
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, fmt.Errorf("stripe journal: %w", err)
		}
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("stripe journal: %w", err)
	}
	j.f = f
	return j, nil
}

// load reads the file and returns the length of its complete lines (-1 if
// the file does not exist).
func (j *Journal) load() (int64, error) {
	b, err := os.ReadFile(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stripe journal: %w", err)
	}
	var good int64
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), maxJournalLine+1024)
	for sc.Scan() {
		line := sc.Bytes()
		end := good + int64(len(line)) + 1
		if end > int64(len(b)) {
			break // no newline: torn
		}
		var l journalLine
		if err := json.Unmarshal(line, &l); err != nil || l.Kind == "" {
			break // torn or garbage: stop here
		}
		j.set(l.Kind+"/"+l.ID, l.V)
		j.lines++
		good = end
	}
	return good, nil
}

func (j *Journal) set(key string, v json.RawMessage) {
	if _, ok := j.recs[key]; !ok {
		j.order = append(j.order, key)
	}
	j.recs[key] = v
}

func (j *Journal) compact() error {
	var buf bytes.Buffer
	for _, k := range j.order {
		kind, id, _ := cut(k)
		b, err := json.Marshal(journalLine{Kind: kind, ID: id, V: j.recs[k]})
		if err != nil {
			return err
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("stripe journal: %w", err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("stripe journal: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("stripe journal: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("stripe journal: %w", err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return fmt.Errorf("stripe journal: %w", err)
	}
	if d, err := os.Open(filepath.Dir(j.path)); err == nil {
		d.Sync()
		d.Close()
	}
	j.lines = len(j.order)
	return nil
}

func cut(k string) (kind, id string, ok bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

// Put writes a new version of the record (kind, id) and returns once it
// is on disk.
func (j *Journal) Put(kind, id string, v any) error {
	val, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("stripe journal: %w", err)
	}
	line, err := json.Marshal(journalLine{Kind: kind, ID: id, V: val})
	if err != nil {
		return fmt.Errorf("stripe journal: %w", err)
	}
	if len(line) > maxJournalLine {
		return fmt.Errorf("stripe journal: record %s/%s too large", kind, id)
	}
	line = append(line, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return errors.New("stripe journal: closed")
	}
	if _, err := j.f.Write(line); err != nil {
		return fmt.Errorf("stripe journal: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("stripe journal: %w", err)
	}
	j.set(kind+"/"+id, val)
	j.lines++
	return nil
}

// Get decodes the record (kind, id) into v and reports whether it exists.
func (j *Journal) Get(kind, id string, v any) (bool, error) {
	j.mu.Lock()
	raw, ok := j.recs[kind+"/"+id]
	j.mu.Unlock()
	if !ok {
		return false, nil
	}
	return true, json.Unmarshal(raw, v)
}

// List returns the records of kind, newest first (by first write).
func (j *Journal) List(kind string) []json.RawMessage {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []json.RawMessage
	for _, k := range slices.Backward(j.order) {
		if kd, _, _ := cut(k); kd == kind {
			out = append(out, j.recs[k])
		}
	}
	return out
}

// Close closes the file.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
