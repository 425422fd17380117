package infer

import (
	"context"
	"fmt"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
)

// LoadAdapted loads the checkpoint in dir with the PEFT LoRA adapter in
// adapterDir merged into its weights in memory (W + lora_alpha/r·B·A,
// computed once, as `adapters merge` does), and dir's tokenizer.
func LoadAdapted(name, dir, adapterDir string, cfg Config, log zerolog.Logger) (*model.Model, *tokenizer.Tokenizer, error) {
	ck, err := train.LoadMerged(dir, adapterDir)
	if err != nil {
		return nil, nil, fmt.Errorf("model %s from %s with adapter %s: %w", name, dir, adapterDir, err)
	}
	opts := []model.Option{model.WithLogger(log)}
	if cfg.Backend != "" {
		opts = append(opts, model.WithBackend(cfg.Backend))
	}
	m, err := model.New(ck, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("model %s from %s with adapter %s: %w", name, dir, adapterDir, err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		_ = m.Close()
		return nil, nil, fmt.Errorf("tokenizer of model %s in %s: %w", name, dir, err)
	}
	return m, tok, nil
}

// StartDirsWithAdapters is StartDirs where adapters (model name → LoRA
// adapter directory) are merged into the models of those names as they
// load (see LoadAdapted), so that the workers serve the tuned models under
// their names. An adapter for a name not in models is an error.
func StartDirsWithAdapters(ctx context.Context, bus *pipeline.Bus, models, adapters map[string]string, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Workers, error) {
	for n := range adapters {
		if _, ok := models[n]; !ok {
			return nil, fmt.Errorf("%w: adapter for %s, which is not a model served", ErrInvalidOption, n)
		}
	}
	ins, owned, err := loadModels(models, adapters, cfg, log)
	if err != nil {
		return nil, err
	}
	w, err := start(ctx, bus, ins, owned, cfg, log, reg)
	if err != nil {
		closeModels(owned)
		return nil, err
	}
	return w, nil
}

// loadModels loads the models (name → directory, in name order), each
// with its adapter of adapters merged in (LoadAdapted) where it has one.
func loadModels(models, adapters map[string]string, cfg Config, log zerolog.Logger) ([]ModelInput, []*model.Model, error) {
	names := make([]string, 0, len(models))
	for n := range models {
		names = append(names, n)
	}
	sort.Strings(names)
	var ins []ModelInput
	var owned []*model.Model
	for _, n := range names {
		mlog := logging.Named(log, "largeforge.model")
		var (
			m   *model.Model
			tok *tokenizer.Tokenizer
			err error
		)
		if ad := adapters[n]; ad != "" {
			m, tok, err = LoadAdapted(n, models[n], ad, cfg, mlog)
		} else {
			m, tok, err = Load(n, models[n], cfg, mlog)
		}
		if err != nil {
			closeModels(owned)
			return nil, nil, err
		}
		owned = append(owned, m)
		ins = append(ins, ModelInput{Name: n, Model: m, Tok: tok})
	}
	return ins, owned, nil
}

// closeModels closes the models loaded.
func closeModels(owned []*model.Model) {
	for _, o := range owned {
		_ = o.Close()
	}
}
