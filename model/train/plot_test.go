package train

import (
	"bytes"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// colourCount counts the pixels of c inside r.
func colourCount(img image.Image, r image.Rectangle, c color.RGBA) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) == c {
				n++
			}
		}
	}
	return n
}

// hasText reports whether img shows s drawn with its baseline at (x, y):
// every pixel the same text sets on a blank picture is set in img.
func hasText(img image.Image, x, y int, s string) bool {
	want := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	draw.Draw(want, want.Bounds(), image.White, image.Point{}, draw.Src)
	drawText(want, x, y, s, plotText)
	set := 0
	for py := y - plotFace.Ascent; py < y+plotFace.Descent; py++ {
		for px := x; px < x+textWidth(s); px++ {
			if want.RGBAAt(px, py) != plotText {
				continue
			}
			set++
			if color.RGBAModel.Convert(img.At(px, py)).(color.RGBA) != plotText {
				return false
			}
		}
	}
	return set > 0
}

// The loss curve: a title naming the run, labelled axes, the training loss
// in blue and the evaluation loss in orange in the plot area; a run
// without evaluations has no orange there.
func TestLossCurvePicture(t *testing.T) {
	var history []map[string]any
	for step := 1; step <= 40; step++ {
		e := map[string]any{"step": step, "loss": 3.0 - float64(step)*0.05}
		history = append(history, e)
		if step%10 == 0 {
			history = append(history, map[string]any{"step": float64(step), "eval_loss": 3.2 - float64(step)*0.04})
		}
	}
	area := image.Rect(plotLeft+1, plotTop, plotW-plotRight, plotH-plotBott)
	tests := []struct {
		name, run   string
		history     []map[string]any
		trainPixels bool
		evalPixels  bool
	}{
		{"train and eval", "sft-colours (stories260K)", history, true, true},
		{"train only", "other-run (tiny)", history[:9], true, false},
		{"empty", "", nil, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), LossCurveFile)
			if err := WriteLossCurve(path, tc.run, tc.history); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if img.Bounds() != image.Rect(0, 0, plotW, plotH) {
				t.Fatalf("bounds %v", img.Bounds())
			}
			if n := colourCount(img, area, plotTrain); (n > 100) != tc.trainPixels {
				t.Errorf("%d training-loss pixels in the plot area", n)
			}
			if n := colourCount(img, area, plotEval); (n > 30) != tc.evalPixels {
				t.Errorf("%d eval-loss pixels in the plot area", n)
			}
			title := lossTitle(tc.run)
			if !hasText(img, (plotW-textWidth(title))/2, 28, title) {
				t.Errorf("no title %q", title)
			}
			if hasText(img, (plotW-textWidth(lossTitle("another run")))/2, 28, lossTitle("another run")) {
				t.Error("the title check matches any title")
			}
			if !hasText(img, (plotLeft+plotW-plotRight-textWidth("step"))/2, plotH-14, "step") {
				t.Error("no x-axis label")
			}
			if n := colourCount(img, image.Rect(0, plotTop, 30, plotH-plotBott), plotText); n < 20 {
				t.Errorf("y-axis label: %d text pixels left of the ticks", n)
			}
			if n := colourCount(img, image.Rect(30, plotTop-8, plotLeft-6, plotH-plotBott+8), plotText); n < 40 {
				t.Errorf("y tick labels: %d text pixels", n)
			}
			if n := colourCount(img, image.Rect(plotW-plotRight-250, 40, plotW, 56), plotEval); n < 30 {
				t.Errorf("legend: %d eval-loss pixels", n)
			}
		})
	}
}

func TestNiceTicks(t *testing.T) {
	tests := []struct {
		lo, hi float64
		n      int
		first  float64
		last   float64
	}{
		{0, 40, 6, 0, 40},
		{1.02, 2.93, 5, 1, 3},
		{0.5, 0.5, 5, 0, 1},
	}
	for _, tc := range tests {
		got := niceTicks(tc.lo, tc.hi, tc.n)
		if got[0] > tc.lo || got[len(got)-1] < tc.hi || got[0] != tc.first || got[len(got)-1] != tc.last {
			t.Errorf("niceTicks(%v, %v) = %v", tc.lo, tc.hi, got)
		}
	}
}
