package tokenizer

import (
	"fmt"
	"strings"
	"sync"
)

// mergeRule is the outcome of merging an adjacent pair of symbols.
type mergeRule struct {
	rank int32 // lower merges first
	id   int32 // the merged token
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// bpe is the BPE model of tokenizer.json.
type bpe struct {
	vocab        map[string]int
	merges       map[uint64]mergeRule
	unk          int32 // -1: none
	fuseUnk      bool
	byteFallback bool
	byteTok      [256]int32 // <0xXX> tokens for byte fallback, -1 if absent
	ignoreMerges bool
	byteLevel    bool       // symbols are the bytes of the piece (byte-level BPE)
	byteSym      [256]int32 // byte-level: the token of each byte's character, -1 if absent

	// chunkAtMeta: no token holds "▁" after another character, so a word can
	// be cut where a run of "▁" starts without changing the result (merges
	// never cross such a cut); the pieces are then cached like words.
	chunkAtMeta bool

	mu    sync.RWMutex
	cache map[string][]int32
}

const maxCacheEntries = 1 << 16

const meta = "▁"

// encodePiece appends the tokens of one pre-tokenized piece to dst.
func (m *bpe) encodePiece(piece string, dst []int) []int {
	if piece == "" {
		return dst
	}
	if m.chunkAtMeta && len(piece) > 16 {
		start := 0
		for i := 1; i < len(piece); {
			k := strings.Index(piece[i:], meta)
			if k < 0 {
				break
			}
			p := i + k
			if !strings.HasSuffix(piece[:p], meta) {
				dst = m.encodeChunk(piece[start:p], dst)
				start = p
			}
			i = p + len(meta)
		}
		return m.encodeChunk(piece[start:], dst)
	}
	return m.encodeChunk(piece, dst)
}

// encodeChunk appends the tokens of a piece, through the cache when short.
func (m *bpe) encodeChunk(piece string, dst []int) []int {
	useCache := len(piece) < 64
	if useCache {
		m.mu.RLock()
		ids, ok := m.cache[piece]
		m.mu.RUnlock()
		if ok {
			for _, id := range ids {
				dst = append(dst, int(id))
			}
			return dst
		}
	}
	ids := m.encodeWord(piece)
	if useCache {
		m.mu.Lock()
		if len(m.cache) < maxCacheEntries {
			m.cache[strings.Clone(piece)] = ids // the piece shares the input's memory
		}
		m.mu.Unlock()
	}
	for _, id := range ids {
		dst = append(dst, int(id))
	}
	return dst
}

// symbol is one node of the doubly linked list a word is merged in.
type symbol struct {
	id         int32
	prev, next int32
	dead       bool
}

// candidate is a pair that may merge: the symbol at pos with its successor.
type candidate struct {
	rank int32
	pos  int32
}

func (m *bpe) encodeWord(piece string) []int32 {
	if m.ignoreMerges {
		word := piece
		if m.byteLevel {
			word = byteLevelString(piece)
		}
		if id, ok := m.vocab[word]; ok {
			return []int32{int32(id)}
		}
	}
	syms := make([]symbol, 0, len(piece))
	add := func(id int32, unk bool) {
		if unk && m.fuseUnk && len(syms) > 0 && syms[len(syms)-1].id == m.unk {
			return
		}
		syms = append(syms, symbol{id: id})
	}
	if m.byteLevel {
		for i := 0; i < len(piece); i++ {
			if id := m.byteSym[piece[i]]; id >= 0 {
				add(id, false)
			} else if m.unk >= 0 {
				add(m.unk, true)
			}
		}
	} else {
		for i := 0; i < len(piece); {
			_, n := runeAt(piece, i)
			ch := piece[i : i+n]
			i += n
			if id, ok := m.vocab[ch]; ok {
				add(int32(id), false)
				continue
			}
			if m.byteFallback {
				ok := true
				for k := 0; k < len(ch); k++ {
					if m.byteTok[ch[k]] < 0 {
						ok = false
					}
				}
				if ok {
					for k := 0; k < len(ch); k++ {
						add(m.byteTok[ch[k]], false)
					}
					continue
				}
			}
			if m.unk >= 0 {
				add(m.unk, true)
			}
		}
	}
	for k := range syms {
		syms[k].prev = int32(k - 1)
		syms[k].next = int32(k + 1)
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	m.mergeAll(syms)
	out := make([]int32, 0, len(syms))
	for k := 0; k >= 0 && k < len(syms); k = int(syms[k].next) {
		out = append(out, syms[k].id)
	}
	return out
}

// mergeAll applies the merges lowest rank first (leftmost on ties), as the
// Hugging Face implementation does.
func (m *bpe) mergeAll(syms []symbol) {
	h := make(candHeap, 0, len(syms))
	for k := 0; k+1 < len(syms); k++ {
		if r, ok := m.merges[pairKey(syms[k].id, syms[k+1].id)]; ok {
			h.push(candidate{r.rank, int32(k)})
		}
	}
	for len(h) > 0 {
		c := h.pop()
		s := &syms[c.pos]
		if s.dead || s.next < 0 {
			continue
		}
		right := &syms[s.next]
		r, ok := m.merges[pairKey(s.id, right.id)]
		if !ok || r.rank != c.rank {
			continue
		}
		s.id = r.id
		right.dead = true
		s.next = right.next
		if s.next >= 0 {
			syms[s.next].prev = c.pos
		}
		if s.prev >= 0 {
			if r2, ok := m.merges[pairKey(syms[s.prev].id, s.id)]; ok {
				h.push(candidate{r2.rank, s.prev})
			}
		}
		if s.next >= 0 {
			if r2, ok := m.merges[pairKey(s.id, syms[s.next].id)]; ok {
				h.push(candidate{r2.rank, c.pos})
			}
		}
	}
}

// candHeap is a binary min-heap ordered by (rank, pos).
type candHeap []candidate

func (h candidate) less(o candidate) bool {
	return h.rank < o.rank || (h.rank == o.rank && h.pos < o.pos)
}

func (h *candHeap) push(c candidate) {
	*h = append(*h, c)
	a := *h
	i := len(a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !a[i].less(a[p]) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *candHeap) pop() candidate {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && a[l].less(a[m]) {
			m = l
		}
		if r < n && a[r].less(a[m]) {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}

// bpeJSON is the "model" object of tokenizer.json.
type bpeJSON struct {
	Type                    string          `json:"type"`
	Dropout                 *float64        `json:"dropout"`
	UnkToken                *string         `json:"unk_token"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	Vocab                   map[string]int  `json:"vocab"`
	Merges                  []mergeJSONItem `json:"merges"`
}

// newBPE builds the model; byteLevel says the pre-tokenizer maps bytes to the
// GPT-2 alphabet.
func newBPE(j *bpeJSON, byteLevel bool) (*bpe, error) {
	if j.Type != "BPE" && j.Type != "" {
		return nil, fmt.Errorf("%w: model type %q (only BPE)", ErrUnsupported, j.Type)
	}
	if j.ContinuingSubwordPrefix != nil && *j.ContinuingSubwordPrefix != "" {
		return nil, fmt.Errorf("%w: BPE continuing_subword_prefix %q", ErrUnsupported, *j.ContinuingSubwordPrefix)
	}
	if j.EndOfWordSuffix != nil && *j.EndOfWordSuffix != "" {
		return nil, fmt.Errorf("%w: BPE end_of_word_suffix %q", ErrUnsupported, *j.EndOfWordSuffix)
	}
	m := &bpe{
		vocab:        j.Vocab,
		merges:       make(map[uint64]mergeRule, len(j.Merges)),
		unk:          -1,
		fuseUnk:      j.FuseUnk,
		byteFallback: j.ByteFallback,
		ignoreMerges: j.IgnoreMerges,
		byteLevel:    byteLevel,
		cache:        make(map[string][]int32),
	}
	if m.vocab == nil {
		m.vocab = map[string]int{}
	}
	for tok, id := range m.vocab {
		if id < 0 || id > maxTokenID {
			return nil, fmt.Errorf("%w: vocab id %d of %q out of range", ErrInvalid, id, tok)
		}
	}
	if j.UnkToken != nil {
		id, ok := m.vocab[*j.UnkToken]
		if !ok {
			return nil, fmt.Errorf("%w: unk_token %q not in vocab", ErrInvalid, *j.UnkToken)
		}
		m.unk = int32(id)
	}
	for b := 0; b < 256; b++ {
		m.byteTok[b], m.byteSym[b] = -1, -1
		if id, ok := m.vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteTok[b] = int32(id)
		}
		if id, ok := m.vocab[byteToStr[b]]; ok {
			m.byteSym[b] = int32(id)
		}
	}
	if _, ok := m.vocab[meta]; ok && !byteLevel {
		m.chunkAtMeta = true
		for tok := range m.vocab {
			if k := strings.Index(tok, meta); k >= 0 && strings.Trim(tok[:k+len(meta)], meta) != "" {
				m.chunkAtMeta = false
				break
			}
			if strings.Contains(strings.TrimLeft(tok, meta), meta) {
				m.chunkAtMeta = false
				break
			}
		}
	}
	for rank, mg := range j.Merges {
		a, ok1 := m.vocab[mg.left]
		b, ok2 := m.vocab[mg.right]
		ab, ok3 := m.vocab[mg.left+mg.right]
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("%w: merge %d %q+%q: token not in vocab", ErrInvalid, rank, mg.left, mg.right)
		}
		// Like the reference implementation, a repeated pair keeps its last rank.
		m.merges[pairKey(int32(a), int32(b))] = mergeRule{rank: int32(rank), id: int32(ab)}
	}
	return m, nil
}
