package main

import "testing"

// worker --role infer --serve-pushed: "all" alone or names, with a model
// cache; it is enough for an infer worker on its own.
func TestValidateServePushed(t *testing.T) {
	tests := []struct {
		name    string
		wc      WorkerConfig
		wantErr bool
	}{
		{"all", WorkerConfig{ServePushed: []string{"all"}, ModelCache: "/c"}, false},
		{"names", WorkerConfig{ServePushed: []string{"ftjob-demo-1", "base"}, ModelCache: "/c"}, false},
		{"all with names", WorkerConfig{ServePushed: []string{"all", "x"}, ModelCache: "/c"}, true},
		{"no cache", WorkerConfig{ServePushed: []string{"all"}}, true},
		{"bad name", WorkerConfig{ServePushed: []string{"a.b"}, ModelCache: "/c"}, true},
		{"nothing to serve", WorkerConfig{ModelCache: "/c"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := validateInfer(tt.wc); (err != nil) != tt.wantErr {
				t.Errorf("validateInfer: %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
