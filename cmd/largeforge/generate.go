package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/serve"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// loadedModel is a model with its tokenizer, ready for text.
type loadedModel struct {
	name string
	m    *model.Model
	tok  *tokenizer.Tokenizer
	gen  *model.TextGenerator
}

func loadModel(ctx context.Context, dir string, maxBatch int) (*loadedModel, error) {
	log := newLogger(ctx)
	opts := []model.Option{model.WithLogger(logging.Named(log, "largeforge.model"))}
	if maxBatch > 0 {
		opts = append(opts, model.WithMaxBatch(maxBatch))
	}
	m, err := model.Load(dir, opts...)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		m.Close()
		return nil, err
	}
	gen, err := model.NewTextGenerator(m, tok)
	if err != nil {
		m.Close()
		return nil, err
	}
	return &loadedModel{name: filepath.Base(filepath.Clean(dir)), m: m, tok: tok, gen: gen}, nil
}

// defaultModelCache is where models fetched from lf_models are kept unless
// --model-cache says otherwise: <user cache dir>/largeforge/models.
func defaultModelCache() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "largeforge", "models")
	}
	return ""
}

// localModelDir is the directory of a --model value: the value itself when
// it is a directory, else the current version of the model of that name in
// lf_models (--nats, connected as the command's role), fetched and verified
// into cache/<name>/<digest>. It returns the name to report for the model
// too: the directory's base name, or the pushed name.
func localModelDir(ctx context.Context, value, cache string) (dir, name string, err error) {
	if st, err := os.Stat(value); err == nil && st.IsDir() {
		return value, filepath.Base(filepath.Clean(value)), nil
	}
	if err := modelstore.ValidName(value); err != nil {
		return "", "", fmt.Errorf("--model %s: not a directory nor a model name in lf_models", value)
	}
	if cache == "" {
		return "", "", fmt.Errorf("--model %s: not a directory; a model from lf_models needs --model-cache", value)
	}
	log := newLogger(ctx)
	bus, err := connectAs(ctx, "largeforge-cli", log)
	if err != nil {
		return "", "", fmt.Errorf("--model %s: not a directory, and no model store to fetch it from: %w", value, err)
	}
	defer bus.Close()
	dir, err = fetchModel(ctx, bus, value, cache, log)
	if err != nil {
		return "", "", fmt.Errorf("--model %s: not a directory, nor a model in lf_models at %s: %w", value, configFrom(ctx).NATS.URL, err)
	}
	return dir, value, nil
}

// modelFlags are the --model and --model-cache flags of generate and score.
func modelFlags(cmd *cobra.Command, value, cache *string) {
	f := cmd.Flags()
	f.StringVar(value, "model", "", "model directory (Hugging Face layout), or the name of a model pushed to lf_models (fetched from --nats)")
	f.StringVar(cache, "model-cache", defaultModelCache(), "where models fetched from lf_models are kept (<cache>/<name>/<digest>)")
}

// loadModelFlag loads the model of --model (see localModelDir).
func loadModelFlag(ctx context.Context, value, cache string, maxBatch int) (*loadedModel, error) {
	dir, name, err := localModelDir(ctx, value, cache)
	if err != nil {
		return nil, err
	}
	lm, err := loadModel(ctx, dir, maxBatch)
	if err != nil {
		return nil, err
	}
	lm.name = name
	return lm, nil
}

func newGenerateCmd() *cobra.Command {
	var dir, cache, prompt, input, output string
	var batch int
	req := schemas.DefaultCompletionRequest()
	var seed int64
	cmd := &cobra.Command{
		Use:   "generate --model DIR|NAME (--prompt TEXT | --input prompts.jsonl --output out.jsonl)",
		Short: "Generate completions with a model directory, or a model pushed to lf_models",
		Long: `Generate with a Hugging Face model directory on this machine, or with the current version
of a model pushed to lf_models (model push), fetched and verified from --nats into
--model-cache/<name>/<digest> (kept there for the next run). With --prompt, print the
completion. With --input, read CompletionRequest lines (model, prompt, max_tokens, temperature, ...; "messages"
for chat) and write one CompletionResponse line per request to --output, in batches
of --batch-size; a request that fails validation gets a line with an "error" object.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--model is required")
			}
			if batch < 1 {
				return fmt.Errorf("--batch-size %d: want at least 1", batch)
			}
			if cmd.Flags().Changed("seed") {
				req.Seed = &seed
			}
			lm, err := loadModelFlag(cmd.Context(), dir, cache, batch)
			if err != nil {
				return err
			}
			defer lm.m.Close()
			req.Model = lm.name
			if input == "" {
				if !cmd.Flags().Changed("prompt") {
					return fmt.Errorf("give --prompt or --input")
				}
				req.Prompt = prompt
				if err := req.Validate(); err != nil {
					return err
				}
				tr, err := serve.TextRequest(lm.tok, req, 0)
				if err != nil {
					return err
				}
				res, err := lm.gen.Generate(cmd.Context(), []model.TextRequest{tr})
				if err != nil {
					return refusal(err)
				}
				fmt.Println(prompt + res[0].Text)
				fmt.Fprintf(os.Stderr, "[finish_reason=%s prompt_tokens=%d completion_tokens=%d]\n", res[0].FinishReason, res[0].PromptTokens, res[0].CompletionTokens)
				return nil
			}
			return generateFile(cmd.Context(), lm, input, output, batch)
		},
	}
	f := cmd.Flags()
	modelFlags(cmd, &dir, &cache)
	f.StringVar(&prompt, "prompt", "", "prompt text")
	f.StringVar(&input, "input", "", "JSONL file of CompletionRequest lines (- for stdin)")
	f.StringVar(&output, "output", "-", "JSONL file of CompletionResponse lines (- for stdout)")
	f.IntVar(&batch, "batch-size", 32, "requests per batch")
	f.IntVar(&req.MaxTokens, "max-tokens", req.MaxTokens, "most tokens to generate")
	f.Float64Var(&req.Temperature, "temperature", req.Temperature, "sampling temperature (0: greedy)")
	f.Float64Var(&req.TopP, "top-p", req.TopP, "nucleus sampling")
	f.IntVar(&req.TopK, "top-k", req.TopK, "top-k sampling (0: off)")
	f.StringSliceVar(&req.Stop, "stop", nil, "stop sequence (repeatable)")
	f.Int64Var(&seed, "seed", 0, "random seed")
	return cmd
}

// errorLine is the output line of a request that could not be run.
type errorLine struct {
	Error *apiError `json:"error"`
}

// apiError is an OpenAI-style error with the input line it is about: the
// message is exactly the validation message ("Invalid max_tokens: ..."),
// the line number in its own field.
type apiError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Line    int    `json:"line"`
}

func openIn(path string) (io.ReadCloser, error) {
	if path == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	return os.Open(path)
}

// refusal is a refused request's error as the user should read it, its
// schemas.ValidationMessage: a field over its limit ("Invalid max_tokens:
// ...") without the batch position.
func refusal(err error) error {
	msg, _ := schemas.ValidationMessage(err)
	return errors.New(msg)
}

func generateFile(ctx context.Context, lm *loadedModel, input, output string, batch int) error {
	in, err := openIn(input)
	if err != nil {
		return err
	}
	defer in.Close()
	var out io.Writer = os.Stdout
	if output != "-" {
		f, err := os.Create(output)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	bw := bufio.NewWriter(out)
	defer bw.Flush()
	enc := json.NewEncoder(bw)

	type pending struct {
		line int
		c    schemas.CompletionRequest
		req  model.TextRequest
		err  error // refused: its ValidationMessage is the line's error
	}
	var queue []pending
	n := 0
	flush := func() error {
		var reqs []model.TextRequest
		for _, p := range queue {
			if p.err == nil {
				reqs = append(reqs, p.req)
			}
		}
		var res []model.TextResult
		if len(reqs) > 0 {
			// Every request here passed Check: the batch runs whole.
			if res, err = lm.gen.Generate(ctx, reqs); err != nil {
				return err
			}
		}
		k := 0
		for _, p := range queue {
			n++
			if p.err != nil {
				msg, param := schemas.ValidationMessage(p.err)
				if err := enc.Encode(errorLine{Error: &apiError{Message: msg, Type: "invalid_request_error", Param: param, Line: p.line}}); err != nil {
					return err
				}
				continue
			}
			resp := serve.Response(fmt.Sprintf("cmpl-%d", p.line), lm.name, p.c, res[k])
			k++
			if err := enc.Encode(resp); err != nil {
				return err
			}
		}
		queue = queue[:0]
		return nil
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<16), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		p := pending{line: line}
		r, err := schemas.DecodeCompletionRequest([]byte(text))
		if err == nil {
			if r.Model == "" {
				r.Model = lm.name
			}
			err = r.Validate()
		}
		if err == nil {
			p.c = r
			p.req, err = serve.TextRequest(lm.tok, r, 0)
		}
		if err == nil {
			err = lm.gen.Check(p.req) // a request the model refuses fails alone
		}
		p.err = err
		queue = append(queue, p)
		if len(queue) >= batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return errors.Join(fmt.Errorf("read %s: %w", input, err), flush())
	}
	return flush()
}
