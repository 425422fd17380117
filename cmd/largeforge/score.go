package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/parquet-go/parquet-go"
	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/internal/atomicfile"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/serve"
)

// scoreRow is one row of scores.parquet: the input line, the row's kind
// (text, completion or dpo), the columns of schemas.ScoreColumns (those of a
// score job's results.parquet), and the error of a row that could not be
// scored. Text rows count every token after the first; prompt+completion
// rows count only the completion's tokens; DPO rows score chosen and
// rejected as completions of the prompt. A column that does not apply is
// null. The score columns are spelled out, not embedded: parquet-go reads an
// embedded struct's null pointers back as zeros.
type scoreRow struct {
	Line            int64    `parquet:"line"`
	Kind            *string  `parquet:"kind,optional"`
	SumLogprob      *float64 `parquet:"sum_logprob,optional"`
	MeanLogprob     *float64 `parquet:"mean_logprob,optional"`
	Perplexity      *float64 `parquet:"perplexity,optional"`
	Tokens          *int64   `parquet:"tokens,optional"`
	ChosenLogprob   *float64 `parquet:"chosen_logprob,optional"`
	RejectedLogprob *float64 `parquet:"rejected_logprob,optional"`
	DPOMargin       *float64 `parquet:"dpo_margin,optional"`
	Error           *string  `parquet:"error,optional"`
}

func newScoreCmd() *cobra.Command {
	var dir, cache, input, output string
	var batch int
	cmd := &cobra.Command{
		Use:   "score --model DIR|NAME --input rows.jsonl --output scores.parquet",
		Short: "Score rows with a model: log-probabilities, perplexity, DPO margins",
		Long: `Score JSONL rows with a model directory on this machine, or with the current version of a
model pushed to lf_models, fetched and verified from --nats into --model-cache. A row is {"text"},
{"prompt","completion"} (only completion tokens count) or {"prompt","chosen","rejected"}
(logp(chosen), logp(rejected) and dpo_margin). Scores go to a Parquet file (zstd), one row
per input line, in order, with the score columns of a score job's results.parquet (null
where a value does not apply); a row that cannot be scored carries an error. It prints the
rows and tokens scored and their rate (rows/s, tokens/s: every prompt and completion token
through the model).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || input == "" || output == "" {
				return fmt.Errorf("--model, --input and --output are required")
			}
			lm, err := loadModelFlag(cmd.Context(), dir, cache, batch)
			if err != nil {
				return err
			}
			defer lm.m.Close()
			rows, rate, err := scoreFile(cmd.Context(), lm, input, batch)
			if err != nil {
				return err
			}
			if err := writeScores(output, rows); err != nil {
				return err
			}
			fmt.Printf("scored %d rows into %s (model: %s)\n", len(rows), output, rate)
			return nil
		},
	}
	f := cmd.Flags()
	modelFlags(cmd, &dir, &cache)
	f.StringVar(&input, "input", "", "JSONL rows (- for stdin)")
	f.StringVar(&output, "output", "", "Parquet file to write")
	f.IntVar(&batch, "batch-size", 32, "rows per batch")
	return cmd
}

// scoreFile scores input's rows, batch at a time; the rate counts the time
// in the model alone.
func scoreFile(ctx context.Context, lm *loadedModel, input string, batch int) ([]scoreRow, serve.ScoreRate, error) {
	var rate serve.ScoreRate
	in, err := openIn(input)
	if err != nil {
		return nil, rate, err
	}
	defer in.Close()
	var rows []scoreRow
	var pending []schemas.ScoreInput
	var at []int // the index in rows of each pending input
	flush := func() error {
		outs, errs, r := serve.ScoreRated(ctx, lm.m, lm.tok, pending)
		rate.Add(r)
		for i, err := range errs {
			row := &rows[at[i]]
			switch {
			case serve.Refused(err):
				row.Error = ptr(refusal(err).Error())
			case err != nil:
				return fmt.Errorf("line %d: %w", row.Line, err)
			default:
				c := outs[i].Columns()
				row.SumLogprob, row.MeanLogprob, row.Perplexity, row.Tokens = c.SumLogprob, c.MeanLogprob, c.Perplexity, c.Tokens
				row.ChosenLogprob, row.RejectedLogprob, row.DPOMargin = c.ChosenLogprob, c.RejectedLogprob, c.DPOMargin
			}
		}
		pending, at = pending[:0], at[:0]
		return nil
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<16), 16<<20)
	line := int64(0)
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		row := scoreRow{Line: line}
		var s schemas.ScoreInput
		if err := json.Unmarshal([]byte(text), &s); err != nil {
			row.Error = ptr("invalid JSON: " + err.Error())
		} else if err := s.Validate(); err != nil {
			msg, _ := schemas.ValidationMessage(err)
			row.Error = &msg
		} else {
			row.Kind = ptr(scoreKind(s))
			pending, at = append(pending, s), append(at, len(rows))
		}
		rows = append(rows, row)
		if len(pending) >= batch {
			if err := flush(); err != nil {
				return nil, rate, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, rate, err
	}
	err = flush()
	return rows, rate, err
}

// scoreKind names a valid row's shape: text, completion or dpo.
func scoreKind(s schemas.ScoreInput) string {
	switch {
	case s.IsDPO():
		return "dpo"
	case s.Text != "":
		return "text"
	}
	return "completion"
}

func ptr[T any](v T) *T { return &v }

func writeScores(path string, rows []scoreRow) error {
	return atomicfile.Write(path, func(out io.Writer) error {
		w := parquet.NewGenericWriter[scoreRow](out, parquet.Compression(&parquet.Zstd))
		if _, err := w.Write(rows); err != nil {
			return err
		}
		return w.Close()
	})
}
