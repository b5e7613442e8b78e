package limits

import (
	"encoding/binary"
	"errors"
	"slices"
	"time"
)

// The database's keys. Every key begins with a byte that says what it holds:
//
//	'c' key        the counters of key, in every window
//	'b' key        the block of key
//	'm' "format"   formatVersion
//
// A key's counters are one value, so that a flush writes one entry per key
// that changed: uvarint(number of counters) and, per counter, uvarint(window
// length, ns) uvarint(buckets) uvarint(number of non-empty buckets) and, per
// bucket oldest first, varint(index − previous index, the first from 0)
// uvarint(count). A block's value is varint(until, Unix ns) varint(count)
// reason.
const (
	counterTag = 'c'
	blockTag   = 'b'
	metaTag    = 'm'
)

// formatVersion is the version of this layout, stored under formatKey.
const formatVersion = "1"

var formatKey = []byte{metaTag, 'f', 'o', 'r', 'm', 'a', 't'}

var errCorrupt = errors.New("corrupt entry")

// appendCounters appends the entry of key's counters to b, key first, and
// returns it and the length of the key part.
func appendCounters(b []byte, key string, e entry) ([]byte, int) {
	b = slices.Grow(b, 1+len(key)+1+len(e)*(binary.MaxVarintLen64+binary.MaxVarintLen32))
	b = append(b, counterTag)
	b = append(b, key...)
	k := len(b)
	b = binary.AppendUvarint(b, uint64(e.len()))
	for pos := 0; pos < len(e); {
		var c counter
		c, pos = e.at(pos)
		b = binary.AppendUvarint(b, uint64(c.w.Length))
		b = binary.AppendUvarint(b, uint64(c.w.Buckets))
		b = binary.AppendUvarint(b, uint64(len(c.buckets)))
		var prev int64
		for _, x := range c.buckets {
			b = binary.AppendVarint(b, x.idx-prev)
			b = binary.AppendUvarint(b, uint64(x.n))
			prev = x.idx
		}
	}
	return b, k
}

func counterKey(key string) []byte {
	return append([]byte{counterTag}, key...)
}

// decodeCounters decodes the entry of a key's counters.
func decodeCounters(k, v []byte) (string, entry, error) {
	if len(k) == 0 || k[0] != counterTag {
		return "", nil, errCorrupt
	}
	d := decoder{b: v}
	n := d.uvarint()
	if n > uint64(len(v)) {
		return "", nil, errCorrupt
	}
	var e entry
	for range n {
		length, buckets, nb := d.uvarint(), d.uvarint(), d.uvarint()
		if d.err || length > 1<<62 || buckets > maxBuckets || nb > uint64(len(v)) || nb > buckets+1 {
			return "", nil, errCorrupt
		}
		w := Window{Length: time.Duration(length), Buckets: int(buckets)}
		if w.validate() != nil {
			return "", nil, errCorrupt
		}
		if _, _, dup := e.find(w); dup {
			return "", nil, errCorrupt
		}
		e = append(e, header(w, int(nb)))
		var prev int64
		for i := range nb {
			delta, count := d.varint(), d.uvarint()
			if d.err || count == 0 || count > 1<<62 || (i > 0 && delta <= 0) {
				return "", nil, errCorrupt
			}
			prev += delta
			e = append(e, bucket{idx: prev, n: int64(count)})
		}
	}
	if d.err || len(d.b) != 0 {
		return "", nil, errCorrupt
	}
	// The entry is kept for as long as its key is used: no room to spare.
	return string(k[1:]), slices.Clone(e), nil
}

// decoder reads varints from b; a malformed one sets err.
type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) uvarint() uint64 {
	x, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[k:]
	return x
}

func (d *decoder) varint() int64 {
	x, k := binary.Varint(d.b)
	if k <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[k:]
	return x
}

func blockKey(key string) []byte {
	return append([]byte{blockTag}, key...)
}

func encodeBlock(b Block) []byte {
	v := make([]byte, 0, 2*binary.MaxVarintLen64+len(b.Reason))
	v = binary.AppendVarint(v, b.Until.UnixNano())
	v = binary.AppendVarint(v, b.Count)
	return append(v, b.Reason...)
}

func decodeBlock(k, v []byte) (Block, error) {
	if len(k) == 0 || k[0] != blockTag {
		return Block{}, errCorrupt
	}
	d := decoder{b: v}
	until, count := d.varint(), d.varint()
	if d.err {
		return Block{}, errCorrupt
	}
	return Block{Key: string(k[1:]), Until: time.Unix(0, until), Reason: string(d.b), Count: count}, nil
}
