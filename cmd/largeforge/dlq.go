package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/dataset/read"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// ErrStaysInDLQ is returned by replay for a dead letter it left where it is
// (still invalid, its target gone, or a stage it cannot replay).
var ErrStaysInDLQ = errors.New("stays in the dead-letter stream")

// dlqStages are the stages dlq replay knows.
const (
	dlqIngest = schemas.StageIngest
	dlqTrain  = "train"
	dlqInfer  = "infer"
)

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, replay and purge the dead letters of LF_DLQ, per stage (as admin)",
		Long: `The dead-letter stream LF_DLQ holds what could not be processed, on lf.dlq.<stage>.<token>
(the token is the dataset or job), with the reason and the original bytes. Stages: ingest
(rejected records), sink, rejects, infer (failed requests of batch jobs), train (training jobs), results
(results the sink refused). Runs as admin.`,
	}
	var stage, token string
	var limit int
	filterOf := func() (string, error) {
		return pipeline.DLQFilter(cmpOr(stage, pipeline.AnyToken), cmpOr(token, pipeline.AnyToken))
	}
	ls := &cobra.Command{
		Use:   "ls [--stage S] [--token T] [--limit N]",
		Short: "List dead letters, newest last: sequence, time, subject, reason, bytes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := filterOf()
			if err != nil {
				return fmt.Errorf("--stage/--token: %w", err)
			}
			return withAdminBus(cmd.Context(), "largeforge-dlq", func(ctx context.Context, bus *pipeline.Bus) error {
				return dlqList(ctx, bus, cmd.OutOrStdout(), filter, limit)
			})
		},
	}
	ls.Flags().IntVar(&limit, "limit", 100, "list at most this many (the newest)")
	show := &cobra.Command{
		Use:   "show SEQ",
		Short: "Print one dead letter as JSON (its data as text when it is UTF-8)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("SEQ %q: want a stream sequence (largeforge dlq ls)", args[0])
			}
			return withAdminBus(cmd.Context(), "largeforge-dlq", func(ctx context.Context, bus *pipeline.Bus) error {
				_, rec, err := dlqGet(ctx, bus, seq)
				if err != nil {
					return err
				}
				return showRecord(cmd.OutOrStdout(), seq, rec)
			})
		},
	}
	var format string
	replay := &cobra.Command{
		Use:   "replay SEQ... | --stage S [--token T]",
		Short: "Send dead letters back: ingest rejects are validated again, training jobs get a new attempt",
		Long: `Replay sends dead letters back to where they failed and removes each one replayed from LF_DLQ.
An ingest reject is validated again (with --format, or its dataset's format) and, when it now
passes, published to lf.data.<dataset>.raw, where the dataset sink stores it; one that still
fails stays, with the reason. A failed request of a batch job (a completion) is run again
on a live infer worker of its model; its job, once ended, is reopened (completed ->
in_progress, one compare-and-set on its record naming the request as replaying) and the
result goes to the results sink marked as a replay, which lets it replace the request's
error row and nothing else, updates the counts and finalises the job again (new output
objects; the old ones readable until replaced). A failed score request is queued again on
lf.req.<job>.<model>, marked as a replay, for an infer worker of its model (its job reopened
the same way). Replay one request of a job at a time: the next once the job has completed
again. A dead-lettered training job is reopened (failed -> validating,
one compare-and-set on its record) and queued again as a new attempt. A dead letter whose
target no longer exists (the dataset or job is gone) stays in the DLQ, as does one of a
stage replay does not handle. The exit status is non-zero when any stayed.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && stage == "" {
				return errors.New("give sequences (largeforge dlq ls) or --stage")
			}
			var fm schemas.Format
			if format != "" {
				var err error
				if fm, err = schemas.ParseFormat(format); err != nil {
					return fmt.Errorf("--format: %w", err)
				}
			}
			return withAdminBus(cmd.Context(), "largeforge-dlq", func(ctx context.Context, bus *pipeline.Bus) error {
				seqs, err := dlqSelect(ctx, bus, args, filterOf)
				if err != nil {
					return err
				}
				return dlqReplay(ctx, bus, cmd.OutOrStdout(), seqs, fm)
			})
		},
	}
	replay.Flags().StringVar(&format, "format", "", "ingest: validate as this format (default: the dataset's)")
	purge := &cobra.Command{
		Use:   "purge SEQ... | --stage S [--token T]",
		Short: "Delete dead letters for good",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && stage == "" {
				return errors.New("give sequences (largeforge dlq ls) or --stage (every stage: --stage '*')")
			}
			return withAdminBus(cmd.Context(), "largeforge-dlq", func(ctx context.Context, bus *pipeline.Bus) error {
				if len(args) == 0 {
					filter, err := filterOf()
					if err != nil {
						return fmt.Errorf("--stage/--token: %w", err)
					}
					n, err := bus.Purge(ctx, pipeline.StreamDLQ, filter)
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "purged %d dead letter(s) on %s\n", n, filter)
					return nil
				}
				seqs, err := dlqSelect(ctx, bus, args, filterOf)
				if err != nil {
					return err
				}
				for _, seq := range seqs {
					if err := dlqDelete(ctx, bus, seq); err != nil {
						return err
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "purged %d dead letter(s)\n", len(seqs))
				return nil
			})
		},
	}
	for _, c := range []*cobra.Command{ls, replay, purge} {
		c.Flags().StringVar(&stage, "stage", "", "the stage: ingest, sink, rejects, infer, train, results ('*': all)")
		c.Flags().StringVar(&token, "token", "", "the dataset or job")
	}
	cmd.AddCommand(ls, show, replay, purge)
	return cmd
}

func cmpOr(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// withAdminBus connects as the command's role (admin unless --nats-user
// names another) and runs f.
func withAdminBus(ctx context.Context, name string, f func(context.Context, *pipeline.Bus) error) error {
	bus, err := connectAs(ctx, name, newLogger(ctx))
	if err != nil {
		return err
	}
	defer bus.Close()
	return f(ctx, bus)
}

// dlqList prints the newest limit dead letters under filter.
func dlqList(ctx context.Context, bus *pipeline.Bus, w io.Writer, filter string, limit int) error {
	msgs, err := bus.Tail(ctx, pipeline.StreamDLQ, filter, max(limit, 1))
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		fmt.Fprintf(w, "no dead letters on %s\n", filter)
		return nil
	}
	fmt.Fprintf(w, "%-8s %-20s %-40s %8s  %s\n", "SEQ", "TIME", "SUBJECT", "BYTES", "REASON")
	for _, m := range msgs {
		rec, err := pipeline.DecodeDLQRecord(m.Data)
		reason := rec.Reason
		if err != nil {
			reason = "(not a DLQ record: " + err.Error() + ")"
		}
		fmt.Fprintf(w, "%-8d %-20s %-40s %8d  %s\n", m.Seq, m.Time.UTC().Format("2006-01-02T15:04:05Z"), m.Subject, rec.DataSize, oneLine(reason, 100))
	}
	return nil
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// dlqGet reads the dead letter at seq.
func dlqGet(ctx context.Context, bus *pipeline.Bus, seq uint64) (string, pipeline.DLQRecord, error) {
	s, err := bus.JetStream().Stream(ctx, pipeline.StreamDLQ)
	if err != nil {
		return "", pipeline.DLQRecord{}, fmt.Errorf("%s: %w", pipeline.StreamDLQ, err)
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", pipeline.DLQRecord{}, fmt.Errorf("dead letter %d: none (largeforge dlq ls)", seq)
	}
	if err != nil {
		return "", pipeline.DLQRecord{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	rec, err := pipeline.DecodeDLQRecord(m.Data)
	if err != nil {
		return m.Subject, pipeline.DLQRecord{}, fmt.Errorf("dead letter %d on %s: %w", seq, m.Subject, err)
	}
	return m.Subject, rec, nil
}

func dlqDelete(ctx context.Context, bus *pipeline.Bus, seq uint64) error {
	s, err := bus.JetStream().Stream(ctx, pipeline.StreamDLQ)
	if err != nil {
		return fmt.Errorf("%s: %w", pipeline.StreamDLQ, err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("delete dead letter %d: %w", seq, err)
	}
	return nil
}

// dlqSelect is the sequences given, or those under the --stage/--token filter.
func dlqSelect(ctx context.Context, bus *pipeline.Bus, args []string, filterOf func() (string, error)) ([]uint64, error) {
	var seqs []uint64
	for _, a := range args {
		seq, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("SEQ %q: want a stream sequence (largeforge dlq ls)", a)
		}
		seqs = append(seqs, seq)
	}
	if len(args) > 0 {
		return seqs, nil
	}
	filter, err := filterOf()
	if err != nil {
		return nil, fmt.Errorf("--stage/--token: %w", err)
	}
	msgs, err := bus.Tail(ctx, pipeline.StreamDLQ, filter, 1<<20)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		seqs = append(seqs, m.Seq)
	}
	return seqs, nil
}

// showRecord prints rec as indented JSON, its data as text when UTF-8.
func showRecord(w io.Writer, seq uint64, rec pipeline.DLQRecord) error {
	out := map[string]any{"seq": seq, "record": rec}
	if utf8.Valid(rec.Data) {
		out["data_text"] = string(rec.Data)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// dlqReplay replays each sequence, printing one line each; it fails with
// ErrStaysInDLQ when any stayed.
func dlqReplay(ctx context.Context, bus *pipeline.Bus, w io.Writer, seqs []uint64, fm schemas.Format) error {
	store, err := jobs.Open(ctx, bus)
	if err != nil {
		return err
	}
	stayed := 0
	for _, seq := range seqs {
		subj, rec, err := dlqGet(ctx, bus, seq)
		if err == nil {
			err = replayOne(ctx, bus, store, seq, subj, rec, fm)
		}
		if err != nil {
			stayed++
			fmt.Fprintf(w, "%d stays: %v\n", seq, err)
			continue
		}
		if err := dlqDelete(ctx, bus, seq); err != nil {
			return err
		}
		fmt.Fprintf(w, "%d replayed (%s)\n", seq, subj)
	}
	if stayed > 0 {
		return fmt.Errorf("%w: %d of %d", ErrStaysInDLQ, stayed, len(seqs))
	}
	return nil
}

// replayOne sends one dead letter back; an error leaves it in the DLQ.
func replayOne(ctx context.Context, bus *pipeline.Bus, store *jobs.Store, seq uint64, subj string, rec pipeline.DLQRecord, fm schemas.Format) error {
	if rec.Truncated {
		return fmt.Errorf("its data was cut to fit the stream (%d of %d bytes): nothing whole to replay", len(rec.Data), rec.DataSize)
	}
	parts := strings.Split(subj, ".")
	if len(parts) != 4 {
		return fmt.Errorf("subject %s is not lf.dlq.<stage>.<token>", subj)
	}
	stage, token := parts[2], parts[3]
	switch stage {
	case dlqIngest:
		return replayReject(ctx, bus, seq, token, rec, fm)
	case dlqTrain:
		return replayTraining(ctx, bus, store, seq, token, rec)
	case dlqInfer:
		return replayRequest(ctx, bus, store, seq, token, rec)
	}
	return fmt.Errorf("stage %s: replay handles ingest, infer and train dead letters (look at it with largeforge dlq show %d, remove it with largeforge dlq purge %d)", stage, seq, seq)
}

// replayReject validates an ingest reject again and, when it passes now,
// publishes it to its dataset's raw subject.
func replayReject(ctx context.Context, bus *pipeline.Bus, seq uint64, ds string, rec pipeline.DLQRecord, fm schemas.Format) error {
	kv, err := bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		return err
	}
	e, err := kv.Get(ctx, ds)
	if errors.Is(err, pipeline.ErrKeyNotFound) {
		return fmt.Errorf("dataset %s no longer exists", ds)
	}
	if err != nil {
		return err
	}
	if fm == "" {
		var m dataset.Manifest
		if err := json.Unmarshal(e.Value, &m); err != nil {
			return fmt.Errorf("manifest of dataset %s: %w", ds, err)
		}
		fm = m.Format
	}
	if fm == "" {
		return fmt.Errorf("dataset %s names no format: give --format", ds)
	}
	items := read.Decode(fmt.Sprintf("dlq:%d", seq), fm, []read.Row{{Line: 1, Data: rec.Data}}, read.ShardLimit(bus, dataset.DefaultShardBytes))
	if r := items[0].Rej; r != nil {
		return fmt.Errorf("still invalid as %s: %s (field %s, rule %s)", fm, r.Error, r.Field, r.Rule)
	}
	subj, err := pipeline.DatasetRawSubject(ds)
	if err != nil {
		return err
	}
	hdr := pipeline.Header{}
	hdr.Set(schemas.HeaderFormat, string(fm))
	if _, err := bus.Publish(ctx, subj, rec.Data, schemas.ReplayMsgID(ds, strconv.FormatUint(seq, 10)), hdr); err != nil {
		return fmt.Errorf("publish to %s: %w", subj, err)
	}
	return nil
}

// replayTraining reopens a dead-lettered training job and queues it again.
func replayTraining(ctx context.Context, bus *pipeline.Bus, store *jobs.Store, seq uint64, id string, rec pipeline.DLQRecord) error {
	m, err := schemas.DecodeTrainJob(rec.Data)
	if err != nil {
		return fmt.Errorf("not a training job message: %w", err)
	}
	if m.Job != id {
		return fmt.Errorf("the message names job %s, its subject %s", m.Job, id)
	}
	j, err := replayTarget(ctx, store, id)
	if err != nil {
		return err
	}
	if j.Status != jobs.StatusFailed {
		return fmt.Errorf("job %s is %s: only a failed job gets a new attempt", id, j.Status)
	}
	if _, err := store.Reopen(ctx, id, j.Revision, jobs.StatusValidating, func(jj *jobs.Job) {
		jj.AddError(jobs.ErrorReport{Code: "replayed", Message: fmt.Sprintf("replayed from dead letter %d: a new attempt", seq)})
	}); err != nil {
		return err
	}
	subj, err := pipeline.TrainSubject(id)
	if err != nil {
		return err
	}
	if _, err := bus.Publish(ctx, subj, rec.Data, schemas.ReplayMsgID(id, strconv.FormatUint(seq, 10)), nil); err != nil {
		return fmt.Errorf("publish to %s: %w", subj, err)
	}
	return nil
}

// replayRequest runs a dead-lettered request of a batch job again and sends
// its result to the results sink as a replay of its error row.
func replayRequest(ctx context.Context, bus *pipeline.Bus, store *jobs.Store, seq uint64, id string, rec pipeline.DLQRecord) error {
	req, err := schemas.DecodeRequest(rec.Data)
	if err != nil {
		return fmt.Errorf("not a job request: %w", err)
	}
	if req.Job != id {
		return fmt.Errorf("the request names job %s, its subject %s", req.Job, id)
	}
	if req.Kind == schemas.KindScore && req.Score != nil {
		return replayScore(ctx, bus, store, seq, id, req, rec)
	}
	if req.Kind != schemas.KindCompletion || req.Completion == nil {
		return fmt.Errorf("a %s request: replay runs completion and score requests", req.Kind)
	}
	j, pending, err := replayable(ctx, store, id, req.CustomID)
	if err != nil {
		return err
	}
	// Run it first: a replay that cannot run leaves the job as it was.
	c := *req.Completion
	c.Model, c.Stream = req.Model, false
	body, err := json.Marshal(c)
	if err != nil {
		return err
	}
	start := time.Now()
	final, err := bus.StreamRPC(ctx, pipeline.RPCCall{Subject: pipeline.RPCSubject(req.Model), Data: body,
		RequestID: fmt.Sprintf("replay-%s-%d", id, seq), Idle: 2 * time.Minute}, nil, nil)
	if errors.Is(err, pipeline.ErrNoResponders) {
		return fmt.Errorf("no infer worker serves model %s: start one (largeforge worker --role infer --model %s=DIR)", req.Model, req.Model)
	}
	if err != nil {
		return fmt.Errorf("run it again on model %s: %w", req.Model, err)
	}
	res, err := schemas.NewResult(req.Job, req.CustomID, req.Model, req.Kind, req.Line, json.RawMessage(final))
	if err != nil {
		return err
	}
	res.LatencyMS, res.Worker = float64(time.Since(start).Microseconds())/1000, "replay"
	if err := reopenFor(ctx, store, j, pending, req.CustomID); err != nil {
		return err
	}
	data, err := json.Marshal(res)
	if err != nil {
		return err
	}
	subj, err := pipeline.ResultSubject(id)
	if err != nil {
		return err
	}
	hdr := pipeline.Header{}
	hdr.Set(schemas.HeaderReplay, strconv.FormatUint(seq, 10))
	if _, err := bus.Publish(ctx, subj, data, schemas.ReplayMsgID(schemas.MsgID(id, req.CustomID), strconv.FormatUint(seq, 10)), hdr); err != nil {
		return fmt.Errorf("publish the result to %s: %w", subj, err)
	}
	return nil
}

// replayTarget is the job a dead letter goes back to; its error says when
// the job no longer exists.
func replayTarget(ctx context.Context, store *jobs.Store, id string) (jobs.Job, error) {
	j, err := store.Get(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return j, fmt.Errorf("job %s no longer exists", id)
	}
	return j, err
}
