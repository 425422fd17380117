package dataset

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/schemas"
)

// A gpt turn's weight 0 is kept in a Parquet part, and a part written
// before turns had a weight reads back with every turn trained on.
func TestPartTurnWeight(t *testing.T) {
	zero := 0
	recs := []schemas.Record{{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{
		{From: "human", Value: "h"}, {From: "gpt", Value: "g", Weight: &zero}, {From: "human", Value: "h2"}, {From: "gpt", Value: "g2"}}}}}
	path := filepath.Join(t.TempDir(), "w.parquet")
	if _, err := WritePart(path, schemas.FormatShareGPT, recs, idsOf(recs), nil); err != nil {
		t.Fatal(err)
	}
	_, got, _, err := ReadPart(path)
	if err != nil || !reflect.DeepEqual(got, recs) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}

	type oldTurn struct {
		From  string `parquet:"from"`
		Value string `parquet:"value"`
	}
	type oldRow struct {
		ID            string    `parquet:"id"`
		Conversations []oldTurn `parquet:"conversations,list"`
	}
	old := filepath.Join(t.TempDir(), "old.parquet")
	f, err := os.Create(old)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[oldRow](f, parquet.KeyValueMetadata(metaFormat, string(schemas.FormatShareGPT)))
	if _, err := w.Write([]oldRow{{ID: "x", Conversations: []oldTurn{{"human", "h"}, {"gpt", "g"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	_, got, _, err = ReadPart(old)
	if err != nil || len(got) != 1 || got[0].ShareGPT.Conversations[1].Weight != nil || !got[0].ShareGPT.Conversations[1].Trained() {
		t.Fatalf("old part: %+v, %v", got, err)
	}
}
