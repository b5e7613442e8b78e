package decisions

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Files keeps records as JSON lines, one file per UTC day
// (decisions-2026-11-22.jsonl) in Dir, and deletes the files older than the
// retention. Writing is an append; finding an id reads the days back from
// the newest, which suits a store written on every refusal and read when a
// customer calls. The files are plain text for support's grep as well.
type Files struct {
	Dir       string
	Retention time.Duration
	Now       func() time.Time

	mu   sync.Mutex
	day  string
	file *os.File
}

const filePrefix, fileSuffix = "decisions-", ".jsonl"

func (f *Files) name(day string) string { return filepath.Join(f.Dir, filePrefix+day+fileSuffix) }

// open makes the file of today current, deleting the expired ones when the day changes.
func (f *Files) open(now time.Time) error {
	day := now.UTC().Format(time.DateOnly)
	if f.file != nil && f.day == day {
		return nil
	}
	if f.file != nil {
		f.file.Close()
		f.file = nil
	}
	if err := os.MkdirAll(f.Dir, 0o750); err != nil {
		return err
	}
	file, err := os.OpenFile(f.name(day), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	f.file, f.day = file, day
	days, err := f.days()
	if err != nil {
		return err
	}
	oldest := now.Add(-f.Retention).UTC().Format(time.DateOnly)
	for _, d := range days {
		if d < oldest {
			os.Remove(f.name(d))
		}
	}
	return nil
}

// days lists the days that have a file, newest first.
func (f *Files) days() ([]string, error) {
	entries, err := os.ReadDir(f.Dir)
	if err != nil {
		return nil, err
	}
	var days []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, filePrefix) && strings.HasSuffix(n, fileSuffix) {
			days = append(days, strings.TrimSuffix(strings.TrimPrefix(n, filePrefix), fileSuffix))
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(days)))
	return days, nil
}

// Put appends r to the file of its day.
func (f *Files) Put(_ context.Context, r Record) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.open(f.Now()); err != nil {
		return fmt.Errorf("decisions: %w", err)
	}
	_, err = f.file.Write(append(line, '\n'))
	return err
}

// Get finds the record with id within the retention.
func (f *Files) Get(_ context.Context, id string) (Record, bool, error) {
	f.mu.Lock()
	days, err := f.days()
	f.mu.Unlock()
	if err != nil {
		if os.IsNotExist(err) {
			return Record{}, false, nil
		}
		return Record{}, false, err
	}
	needle := `"id":"` + id + `"`
	oldest := f.Now().Add(-f.Retention)
	for _, day := range days {
		r, ok, err := f.find(f.name(day), needle)
		if err != nil || ok {
			if ok && r.Time.Before(oldest) {
				return Record{}, false, nil
			}
			return r, ok, err
		}
	}
	return Record{}, false, nil
}

func (f *Files) find(path, needle string) (Record, bool, error) {
	file, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) { // deleted by a day change meanwhile
			return Record{}, false, nil
		}
		return Record{}, false, err
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), needle) {
			continue
		}
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return Record{}, false, fmt.Errorf("decisions: %s: %w", path, err)
		}
		return r, true, nil
	}
	return Record{}, false, sc.Err()
}

// Close closes the current file.
func (f *Files) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.file == nil {
		return nil
	}
	err := f.file.Close()
	f.file = nil
	return err
}
