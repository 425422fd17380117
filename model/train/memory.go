package train

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// MemoryEstimate is what a training run needs in memory, in bytes, by part.
// Every value is float32 (4 bytes). With W the model's parameters, T the
// trained ones (W, or the adapters and trained biases under LoRA), rows the
// per_device_batch_size (twice that for DPO: chosen and rejected) and s the
// max_seq_length:
//
//	Weights     = 4·(2·W + T_lora)   the checkpoint as read and the trainer's copy (and the adapters)
//	Gradients   = 4·2·T              one step's gradients and their accumulator
//	Optimizer   = 4·2·T              AdamW's first and second moments
//	Activations = 4·rows·s·a         what the forward pass keeps for the backward pass
//
// where a, per token, is L·(10·h + 2·(q + 2·kv) + 4·i + 2·heads·s) + 3·V: in
// each of the L layers the residual stream and its norms (h), the query, key
// and value projections before and after rotary embedding (q, kv), the
// gated MLP (i), and the attention scores and their softmax over s keys;
// then the logits, their log-softmax and its gradient over the vocabulary
// V. Every micro-batch is counted at the full max_seq_length, the worst a
// run can meet (a packed run meets it on every row). The backward pass's
// other gradients and the graph compiler's scratch space are left out: the
// estimate is meant to refuse runs that cannot fit, not to size ones that
// barely do.
type MemoryEstimate struct {
	Weights     int64
	Gradients   int64
	Optimizer   int64
	Activations int64
	Rows        int // rows per micro-batch
	SeqLen      int // tokens per row
}

// Total is the sum of the parts (at most math.MaxInt64).
func (e MemoryEstimate) Total() int64 {
	return saturate(float64(e.Weights) + float64(e.Gradients) + float64(e.Optimizer) + float64(e.Activations))
}

// EstimateMemory estimates the memory of training a model of config mc
// with tc (per_device_batch_size), lora (nil for full fine-tuning), method
// ("sft" or "dpo") on rows of seqLen tokens. See MemoryEstimate for the
// formula. It reads only the config: nothing of the size it estimates is
// allocated.
func EstimateMemory(mc checkpoint.Config, tc schemas.TrainingConfig, lora *schemas.LoraConfig, method string, seqLen int) MemoryEstimate {
	const f32 = 4.0
	var w, adapters, biases float64
	for _, wt := range checkpoint.Layout(mc) {
		n := 1.0
		for _, d := range wt.Shape {
			n *= float64(d)
		}
		w += n
		if lora == nil {
			continue
		}
		if wt.Bias && lora.Bias != schemas.LoraBiasNone {
			biases += n // an upper bound for lora_only
		}
		if !wt.Bias && len(wt.Shape) == 2 && slices.Contains(lora.TargetModules, wt.Module) {
			adapters += float64(lora.R) * float64(wt.Shape[0]+wt.Shape[1])
		}
	}
	trained := w
	if lora != nil {
		trained = adapters + biases
	}
	rows := tc.PerDeviceBatchSize
	if method == "dpo" {
		rows *= 2
	}
	s := float64(seqLen)
	h, i, v := float64(mc.HiddenSize), float64(mc.IntermediateSize), float64(mc.VocabSize)
	q, kv := float64(mc.NumHeads*mc.HeadDim), float64(mc.NumKVHeads*mc.HeadDim)
	perToken := float64(mc.NumLayers)*(10*h+2*(q+2*kv)+4*i+2*float64(mc.NumHeads)*s) + 3*v
	e := MemoryEstimate{
		Weights:     saturate(f32 * (2*w + adapters)),
		Gradients:   saturate(f32 * 2 * trained),
		Optimizer:   saturate(f32 * 2 * trained),
		Activations: saturate(f32 * float64(rows) * s * perToken),
		Rows:        rows,
		SeqLen:      seqLen,
	}
	return e
}

func saturate(x float64) int64 {
	if x >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(x)
}

// CheckMemory returns an error wrapping ErrNotEnoughMemory when e needs
// more than available bytes, naming each part and what to lower.
func CheckMemory(e MemoryEstimate, available int64) error {
	if e.Total() <= available {
		return nil
	}
	return fmt.Errorf("%w: the run needs about %s (weights %s, gradients %s, optimizer state %s, activations %s for %d rows of %d tokens) but %s is available; lower per_device_batch_size or max_seq_length (raise gradient_accumulation_steps to keep the effective batch)",
		ErrNotEnoughMemory, FormatBytes(e.Total()), FormatBytes(e.Weights), FormatBytes(e.Gradients), FormatBytes(e.Optimizer),
		FormatBytes(e.Activations), e.Rows, e.SeqLen, FormatBytes(available))
}

// FormatBytes writes n in B, KiB, MiB, GiB, TiB or PiB with three
// significant digits.
func FormatBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	x, u := float64(n), 0
	for x >= 1024 && u < len(units)-1 {
		x /= 1024
		u++
	}
	if u == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.3g %s", x, units[u])
}

// AvailableMemory is the memory this process may still allocate: the
// MemAvailable of /proc/meminfo, or the room left under the process's
// cgroup memory limit (cgroup v2 memory.max - memory.current, or v1
// memory.limit_in_bytes - memory.usage_in_bytes) when that is lower.
func AvailableMemory() (int64, error) { return availableMemory("/") }

// availableMemory is AvailableMemory with /proc and /sys/fs/cgroup under root.
func availableMemory(root string) (int64, error) {
	data, err := os.ReadFile(filepath.Join(root, "proc/meminfo"))
	if err != nil {
		return 0, fmt.Errorf("available memory: %w", err)
	}
	avail, err := memAvailable(data)
	if err != nil {
		return 0, fmt.Errorf("available memory: %w", err)
	}
	if room, ok := cgroupRoom(root); ok && room < avail {
		avail = room
	}
	return avail, nil
}

// memAvailable reads the MemAvailable line of /proc/meminfo (in kB).
func memAvailable(meminfo []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("MemAvailable: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no MemAvailable in /proc/meminfo")
}

// cgroupRoom is the limit less the usage of the process's memory cgroup;
// false when there is no limit or it cannot be read.
func cgroupRoom(root string) (int64, bool) {
	cg := filepath.Join(root, "sys/fs/cgroup")
	dirs := []string{cg}
	if data, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup")); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok && p != "/" && p != "" {
				dirs = append([]string{filepath.Join(cg, p)}, dirs...) // v2: the process's own group first
			}
		}
	}
	for _, d := range dirs {
		if room, ok := limitLessUsage(filepath.Join(d, "memory.max"), filepath.Join(d, "memory.current")); ok {
			return room, true
		}
	}
	return limitLessUsage(filepath.Join(cg, "memory/memory.limit_in_bytes"), filepath.Join(cg, "memory/memory.usage_in_bytes"))
}

// noLimit: cgroup v1 writes "no limit" as a huge number (near MaxInt64
// rounded to pages); anything above this is no limit.
const noLimit = 1 << 60

func limitLessUsage(limitFile, usageFile string) (int64, bool) {
	read := func(p string) (int64, bool) {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, false
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return v, err == nil
	}
	limit, ok := read(limitFile) // "max" (no limit) does not parse
	if !ok || limit >= noLimit {
		return 0, false
	}
	usage, ok := read(usageFile)
	if !ok {
		usage = 0
	}
	return max(limit-usage, 0), true
}
