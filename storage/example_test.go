package storage_test

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/largeforge/largeforge/storage"
)

// Two writers publish parts of one dataset; neither overwrites the other's.
func ExampleParts() {
	ctx := context.Background()
	dataDir, _ := os.MkdirTemp("", "lf-example-")
	defer os.RemoveAll(dataDir)
	store, err := storage.NewLocal(storage.DirsUnder(dataDir))
	if err != nil {
		fmt.Println(err)
		return
	}
	a, _ := storage.DatasetParts(store, "chat-v1")
	b, _ := storage.DatasetParts(store, "chat-v1")
	for _, w := range []*storage.Parts{a, b, a} {
		info, err := w.Publish(ctx, func(w io.Writer) error { _, err := io.WriteString(w, "rows"); return err })
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(info.Key)
	}
	// Output:
	// datasets/chat-v1/part-00000.parquet
	// datasets/chat-v1/part-00001.parquet
	// datasets/chat-v1/part-00002.parquet
}
