package main

import (
	"context"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/pipeline"
)

// startJobWorkers starts the job roles of up on bus (the results sink, a
// train worker and, with models, an infer worker), as up does with dataDir.
func startJobWorkers(ctx context.Context, bus *pipeline.Bus, dataDir string, models map[string]string, log zerolog.Logger, reg prometheus.Registerer) (*Roles, error) {
	wc := upWorkerConfig(dataDir, models, nil)
	names := slices.DeleteFunc(upRoles(wc), func(n string) bool { return n == RoleDataset })
	return startWorkers(ctx, bus, wc, names, log, reg)
}

func TestRoleTable(t *testing.T) {
	tests := []struct {
		name    string
		models  map[string]string
		want    []string
		wantErr bool
	}{
		{name: "up without models", want: []string{RoleDataset, RoleResults, RoleTrain}},
		{name: "up with a model", models: map[string]string{"m": "/m"}, want: []string{RoleDataset, RoleResults, RoleTrain, RoleInfer}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := upRoles(upWorkerConfig("/data", tt.models, nil))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("upRoles = %v, want %v", got, tt.want)
			}
			for _, n := range got {
				if _, err := findRole(n); err != nil {
					t.Errorf("role %s is not in the table: %v", n, err)
				}
			}
		})
	}
	if _, err := findRole("trainer"); err == nil {
		t.Error("findRole accepted an unknown role")
	}
	if _, err := startWorkers(context.Background(), nil, WorkerConfig{}, []string{"trainer"}, zerolog.Nop(), nil); err == nil {
		t.Error("startWorkers accepted an unknown role")
	}
}
