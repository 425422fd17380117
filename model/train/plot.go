package train

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"

	"github.com/largeforge/largeforge/internal/atomicfile"
)

// LossCurveFile is the loss-curve picture written into output_dir.
const LossCurveFile = "loss_curve.png"

// Loss-curve picture size and colours: training loss blue, eval loss orange.
const (
	plotW, plotH, plotPad = 640, 360, 24
)

var (
	plotTrain = color.RGBA{31, 119, 180, 255}
	plotEval  = color.RGBA{255, 127, 14, 255}
	plotAxis  = color.RGBA{90, 90, 90, 255}
)

type plotPoint struct{ step, loss float64 }

// WriteLossCurve draws the loss (and eval_loss) of a log history against
// the step as a PNG at path (axes only, no text), written atomically.
func WriteLossCurve(path string, history []map[string]any) error {
	var train, eval []plotPoint
	for _, e := range history {
		step, ok := e["step"].(int)
		if !ok {
			if f, okf := e["step"].(float64); okf {
				step, ok = int(f), true
			}
		}
		if !ok {
			continue
		}
		if l, ok := e["loss"].(float64); ok && !math.IsNaN(l) {
			train = append(train, plotPoint{float64(step), l})
		}
		if l, ok := e["eval_loss"].(float64); ok && !math.IsNaN(l) {
			eval = append(eval, plotPoint{float64(step), l})
		}
	}
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	for x := plotPad; x < plotW-plotPad; x++ {
		img.Set(x, plotH-plotPad, plotAxis)
	}
	for y := plotPad; y <= plotH-plotPad; y++ {
		img.Set(plotPad, y, plotAxis)
	}
	maxStep, lo, hi := 1.0, math.Inf(1), math.Inf(-1)
	for _, p := range append(append([]plotPoint{}, train...), eval...) {
		maxStep = math.Max(maxStep, p.step)
		lo, hi = math.Min(lo, p.loss), math.Max(hi, p.loss)
	}
	if hi <= lo {
		lo, hi = lo-1, hi+1
	}
	px := func(p plotPoint) (int, int) {
		x := plotPad + int(p.step/maxStep*float64(plotW-2*plotPad-1))
		y := plotH - plotPad - int((p.loss-lo)/(hi-lo)*float64(plotH-2*plotPad-1))
		return x, y
	}
	draw := func(pts []plotPoint, c color.Color) {
		for i, p := range pts {
			x1, y1 := px(p)
			for dx := -1; dx <= 1; dx++ { // a dot at each point
				for dy := -1; dy <= 1; dy++ {
					img.Set(x1+dx, y1+dy, c)
				}
			}
			if i == 0 {
				continue
			}
			x0, y0 := px(pts[i-1])
			n := max(abs(x1-x0), abs(y1-y0), 1)
			for k := 0; k <= n; k++ {
				img.Set(x0+(x1-x0)*k/n, y0+(y1-y0)*k/n, c)
			}
		}
	}
	draw(train, plotTrain)
	draw(eval, plotEval)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("loss curve: %w", err)
	}
	return atomicfile.WriteBytes(path, buf.Bytes())
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
