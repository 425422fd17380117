package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/largeforge/largeforge/storage"
)

// Conformance runs what every storage.Store must do on the stores newStore
// returns (a fresh, empty one per call): atomic puts and creates, one
// winner of racing creates, parts numbered apart by racing writers, reads
// streamed and at random, listing by prefix, and nothing visible of a
// write that failed.
func Conformance(t *testing.T, newStore func(t *testing.T) storage.Store) {
	t.Helper()
	ctx := context.Background()
	body := bytes.Repeat([]byte("0123456789abcdef"), 20000) // several object chunks
	t.Run("PutOpen", func(t *testing.T) {
		s := newStore(t)
		info, err := s.Put(ctx, "datasets/d/a.bin", write(body))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(body)
		if info.Key != "datasets/d/a.bin" || info.Size != int64(len(body)) || info.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("Put info = %+v", info)
		}
		r, oi, err := s.Open(ctx, "datasets/d/a.bin")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if oi.Size != int64(len(body)) {
			t.Errorf("Open size = %d", oi.Size)
		}
		at := make([]byte, 16)
		if _, err := r.ReadAt(at, 16*1000); err != nil || string(at) != "0123456789abcdef" {
			t.Errorf("ReadAt = %q, %v", at, err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("read %d bytes, %v; want %d", len(got), err, len(body))
		}
		if _, err := s.Put(ctx, "datasets/d/a.bin", write([]byte("v2"))); err != nil {
			t.Fatal(err)
		}
		if got := ReadString(t, s, "datasets/d/a.bin"); got != "v2" {
			t.Errorf("after a second Put: %q", got)
		}
		if in, err := s.Stat(ctx, "datasets/d/a.bin"); err != nil || in.Key != "datasets/d/a.bin" || in.Size != 2 {
			t.Errorf("Stat = %+v, %v; want a.bin of 2 bytes", in, err)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		s := newStore(t)
		if _, _, err := s.Open(ctx, "datasets/d/none"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Open of a missing key = %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ctx, "datasets/d/none"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Stat of a missing key = %v, want ErrNotFound", err)
		}
		if _, err := s.Put(ctx, "datasets/../x", write(nil)); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put of a bad key = %v, want ErrInvalidKey", err)
		}
	})
	t.Run("FailedWriteLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		boom := errors.New("boom")
		for _, put := range []func(context.Context, string, func(io.Writer) error) (storage.Info, error){s.Put, s.Create} {
			_, err := put(ctx, "datasets/d/part-00000.parquet", func(w io.Writer) error {
				if _, err := w.Write(body); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Errorf("a failed write = %v, want boom", err)
			}
		}
		if _, _, err := s.Open(ctx, "datasets/d/part-00000.parquet"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Open after a failed write = %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ctx, "datasets/d/part-00000.parquet"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Stat after a failed write = %v, want ErrNotFound", err)
		}
		if l, err := s.List(ctx, "datasets/"); err != nil || len(l) != 0 {
			t.Errorf("List after a failed write = %v, %v", l, err)
		}
	})
	t.Run("CreateOneWinner", func(t *testing.T) {
		s := newStore(t)
		const racers = 8
		var wg sync.WaitGroup
		errs := make([]error, racers)
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.Create(ctx, "datasets/d/part-00007.parquet", write(fmt.Appendf(nil, "writer %d", i)))
			}()
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Errorf("writers %d and %d both created the key", won, i)
			case err == nil:
				won = i
			case !errors.Is(err, storage.ErrExists):
				t.Errorf("writer %d: %v, want ErrExists", i, err)
			}
		}
		if won < 0 {
			t.Fatal("no writer created the key")
		}
		if got := ReadString(t, s, "datasets/d/part-00007.parquet"); got != fmt.Sprintf("writer %d", won) {
			t.Errorf("object holds %q, the winner was %d", got, won)
		}
	})
	t.Run("PartsApart", func(t *testing.T) {
		s := newStore(t)
		const writers, each = 3, 5
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := storage.DatasetParts(s, "d") // a Parts per writer, as per machine
				if err != nil {
					errs <- err
					return
				}
				for i := range each {
					if _, err := p.Publish(ctx, write(fmt.Appendf(nil, "%d/%d", w, i))); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		p, _ := storage.DatasetParts(s, "d")
		list, err := p.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, in := range list {
			seen[ReadString(t, s, in.Key)] = true
		}
		if len(list) != writers*each || len(seen) != writers*each {
			t.Errorf("%d parts holding %d distinct bodies, want %d", len(list), len(seen), writers*each)
		}
	})
	t.Run("List", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []string{"datasets/e/x", "datasets/d/part-00001.parquet", "datasets/d/part-00000.parquet", "datasets/dd/y"} {
			if _, err := s.Put(ctx, k, write([]byte(k))); err != nil {
				t.Fatal(err)
			}
		}
		l, err := s.List(ctx, "datasets/d/")
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, in := range l {
			keys = append(keys, in.Key)
			if in.Size != int64(len(in.Key)) {
				t.Errorf("%s: size %d", in.Key, in.Size)
			}
		}
		if fmt.Sprint(keys) != "[datasets/d/part-00000.parquet datasets/d/part-00001.parquet]" {
			t.Errorf("List(datasets/d/) = %v", keys)
		}
	})
}

// ReadString reads key's object whole.
func ReadString(t testing.TB, s storage.Store, key string) string {
	t.Helper()
	r, _, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func write(b []byte) func(io.Writer) error {
	return func(w io.Writer) error { _, err := w.Write(b); return err }
}
