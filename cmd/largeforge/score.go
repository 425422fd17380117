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
	"github.com/largeforge/largeforge/model"
)

// scoreRow is one row of scores.parquet. Text rows count every token after the
// first; prompt+completion rows count only the completion's tokens; DPO rows
// score chosen and rejected as completions of the prompt.
type scoreRow struct {
	Line            int64   `parquet:"line"`
	Kind            string  `parquet:"kind"` // text, completion or dpo
	Tokens          int64   `parquet:"tokens"`
	SumLogprob      float64 `parquet:"sum_logprob"`
	MeanLogprob     float64 `parquet:"mean_logprob"`
	Perplexity      float64 `parquet:"perplexity"`
	ChosenLogprob   float64 `parquet:"chosen_logprob"`
	RejectedLogprob float64 `parquet:"rejected_logprob"`
	Margin          float64 `parquet:"margin"`
	Error           string  `parquet:"error"`
}

type scoreInput struct {
	Text       *string `json:"text"`
	Prompt     *string `json:"prompt"`
	Completion *string `json:"completion"`
	Chosen     *string `json:"chosen"`
	Rejected   *string `json:"rejected"`
}

func newScoreCmd() *cobra.Command {
	var dir, input, output string
	var batch int
	cmd := &cobra.Command{
		Use:   "score --model DIR --input rows.jsonl --output scores.parquet",
		Short: "Score rows with a local model: log-probabilities, perplexity, DPO margins",
		Long: `Score JSONL rows with a model directory on this machine. A row is {"text"},
{"prompt","completion"} (only completion tokens count) or {"prompt","chosen","rejected"}
(logp(chosen), logp(rejected) and the margin). Scores go to a Parquet file (zstd), one row
per input line, in order; a row that cannot be scored carries an error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || input == "" || output == "" {
				return fmt.Errorf("--model, --input and --output are required")
			}
			lm, err := loadModel(dir, batch)
			if err != nil {
				return err
			}
			defer lm.m.Close()
			rows, err := scoreFile(cmd.Context(), lm, input, batch)
			if err != nil {
				return err
			}
			if err := writeScores(output, rows); err != nil {
				return err
			}
			fmt.Printf("scored %d rows into %s\n", len(rows), output)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model", "", "model directory")
	f.StringVar(&input, "input", "", "JSONL rows (- for stdin)")
	f.StringVar(&output, "output", "", "Parquet file to write")
	f.IntVar(&batch, "batch-size", 32, "rows per batch")
	return cmd
}

func scoreFile(ctx context.Context, lm *loadedModel, input string, batch int) ([]scoreRow, error) {
	in, err := openIn(input)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	var rows []scoreRow
	type ref struct{ row, slot int } // slot: 0 main/chosen, 1 rejected
	var reqs []model.ScoreRequest
	var refs []ref
	flush := func() error {
		if len(reqs) == 0 {
			return nil
		}
		res, err := lm.m.Score(ctx, reqs)
		if err != nil {
			return err
		}
		for i, r := range res {
			row := &rows[refs[i].row]
			if row.Kind == "dpo" {
				if refs[i].slot == 0 {
					row.ChosenLogprob = r.SumLogprob
					row.Tokens += int64(r.Tokens)
				} else {
					row.RejectedLogprob = r.SumLogprob
					row.Tokens += int64(r.Tokens)
					row.Margin = row.ChosenLogprob - row.RejectedLogprob
				}
				continue
			}
			row.Tokens, row.SumLogprob, row.MeanLogprob, row.Perplexity = int64(r.Tokens), r.SumLogprob, r.MeanLogprob, r.Perplexity
		}
		reqs, refs = reqs[:0], refs[:0]
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
		var in scoreInput
		row := scoreRow{Line: line}
		idx := len(rows)
		err := json.Unmarshal([]byte(text), &in)
		switch {
		case err != nil:
			row.Error = "invalid JSON: " + err.Error()
		case in.Text != nil:
			row.Kind = "text"
			reqs = append(reqs, model.ScoreRequest{CompletionIDs: lm.tok.Encode(*in.Text, true)})
			refs = append(refs, ref{idx, 0})
		case in.Prompt != nil && in.Completion != nil:
			row.Kind = "completion"
			reqs = append(reqs, model.ScorePair(lm.tok, *in.Prompt, *in.Completion))
			refs = append(refs, ref{idx, 0})
		case in.Prompt != nil && in.Chosen != nil && in.Rejected != nil:
			row.Kind = "dpo"
			reqs = append(reqs, model.ScorePair(lm.tok, *in.Prompt, *in.Chosen), model.ScorePair(lm.tok, *in.Prompt, *in.Rejected))
			refs = append(refs, ref{idx, 0}, ref{idx, 1})
		default:
			row.Error = `a row needs "text", "prompt"+"completion", or "prompt"+"chosen"+"rejected"`
		}
		rows = append(rows, row)
		if len(reqs) >= batch {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return rows, flush()
}

func writeScores(path string, rows []scoreRow) error {
	return atomicfile.Write(path, func(out io.Writer) error {
		w := parquet.NewGenericWriter[scoreRow](out, parquet.Compression(&parquet.Zstd))
		if _, err := w.Write(rows); err != nil {
			return err
		}
		return w.Close()
	})
}
