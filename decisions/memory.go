package decisions

import (
	"context"
	"sync"
	"time"
)

// Memory keeps records in memory for a retention time, at most Max of them
// (the oldest go first). It serves tests, and a node that keeps no state on
// disk.
type Memory struct {
	Retention time.Duration
	Max       int
	Now       func() time.Time

	mu    sync.Mutex
	byID  map[string]Record
	order []string
}

// Put stores r.
func (m *Memory) Put(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byID == nil {
		m.byID = map[string]Record{}
	}
	m.byID[r.ID] = r
	m.order = append(m.order, r.ID)
	for len(m.order) > 0 && (len(m.byID) > m.Max || m.Now().Sub(m.byID[m.order[0]].Time) > m.Retention) {
		delete(m.byID, m.order[0])
		m.order = m.order[1:]
	}
	return nil
}

// Get returns the record with id, if it is kept.
func (m *Memory) Get(_ context.Context, id string) (Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.byID[id]
	if ok && m.Now().Sub(r.Time) > m.Retention {
		return Record{}, false, nil
	}
	return r, ok, nil
}
