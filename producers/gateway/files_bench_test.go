package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/storage/storagetest"
)

// BenchmarkFilesList times GET /v1/files over 100 files in an lf_artifacts
// that holds LF_BENCH_LIST_OBJECTS other objects (default 20000: jobs'
// results parts), beside its baseline, what every listing read before
// lf_files: the listing of every object of lf_artifacts (bucket_list_ms).
func BenchmarkFilesList(b *testing.B) {
	benchenv.Log(b)
	ctx := context.Background()
	bus, _, others := storagetest.BusyArtifacts(b)
	const files = 100
	gctx, cancel := context.WithCancel(ctx)
	g, err := gateway.New(gctx, bus, gateway.Config{}, pipelinetest.Logger(b), nil, nil)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	url := "http://" + serveGateway(b, gctx, cancel, g, nil)
	oai := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	for i := range files {
		if _, err := oai.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(fmt.Sprintf("{\"custom_id\":\"%d\"}\n", i)), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch}); err != nil {
			b.Fatal(err)
		}
	}
	list := func() int {
		resp, err := http.Get(url + "/v1/files")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var p struct{ Data []gateway.FileObject }
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("GET /v1/files: %d %v", resp.StatusCode, err)
		}
		return len(p.Data)
	}
	list() // the first listing of a bus checks that every file is indexed
	obj, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		fig := benchenv.Figures{}
		for range 3 {
			t0 := time.Now()
			n := list()
			index := time.Since(t0)
			if n != files {
				b.Fatalf("listed %d files, want %d", n, files)
			}
			t0 = time.Now()
			all, err := obj.List(ctx)
			full := time.Since(t0)
			if err != nil || len(all) < others+2*files {
				b.Fatalf("bucket list: %d objects, %v", len(all), err)
			}
			fig.Add("files_list_ms", index.Seconds()*1000)
			fig.Add("bucket_list_ms", full.Seconds()*1000)
			fig.Add("bucket_list_vs_files_list", full.Seconds()/index.Seconds())
		}
		fig.Add("objects", float64(others+2*files))
		fig.Report(b)
	}
}
