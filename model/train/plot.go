package train

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"path/filepath"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/largeforge/largeforge/internal/atomicfile"
)

// LossCurveFile is the loss-curve picture written into output_dir.
const LossCurveFile = "loss_curve.png"

// Loss-curve picture: size, the plot area's margins, and the colours
// (training loss blue, eval loss orange).
const (
	plotW, plotH                           = 800, 480
	plotLeft, plotRight, plotTop, plotBott = 72, 24, 64, 56
)

var (
	plotTrain = color.RGBA{31, 119, 180, 255}
	plotEval  = color.RGBA{255, 127, 14, 255}
	plotAxis  = color.RGBA{90, 90, 90, 255}
	plotGrid  = color.RGBA{230, 230, 230, 255}
	plotText  = color.RGBA{30, 30, 30, 255}
	plotFace  = basicfont.Face7x13
)

type plotPoint struct{ step, loss float64 }

// WriteLossCurve draws the training loss and the evaluation loss of a log
// history against the step as a PNG at path, written atomically: a title
// naming the run, labelled axes with ticks, a grid and a legend.
func WriteLossCurve(path, run string, history []map[string]any) error {
	img := drawLossCurve(run, history)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("loss curve: %w", err)
	}
	return atomicfile.WriteBytes(path, buf.Bytes())
}

// lossPoints reads the loss and eval_loss points of a log history.
func lossPoints(history []map[string]any) (train, eval []plotPoint) {
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
		if l, ok := e["loss"].(float64); ok && !math.IsNaN(l) && !math.IsInf(l, 0) {
			train = append(train, plotPoint{float64(step), l})
		}
		if l, ok := e["eval_loss"].(float64); ok && !math.IsNaN(l) && !math.IsInf(l, 0) {
			eval = append(eval, plotPoint{float64(step), l})
		}
	}
	return train, eval
}

// WithRunName names the run in the loss curve's title (default: the
// output_dir's folder name): a training job's id, where the folder is
// whatever output_dir the job was submitted with.
func WithRunName(name string) Option {
	return func(o *options) error { o.runName = name; return nil }
}

// runName is the run's name in the loss curve's title.
func (t *Trainer) runName() string {
	if t.opts.runName != "" {
		return t.opts.runName
	}
	return filepath.Base(t.cfg.OutputDir)
}

// lossTitle is the picture's title.
func lossTitle(run string) string {
	if run == "" {
		return "Loss"
	}
	return "Loss: " + run
}

func drawLossCurve(run string, history []map[string]any) *image.RGBA {
	train, eval := lossPoints(history)
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	x0, x1, y0, y1 := plotLeft, plotW-plotRight, plotTop, plotH-plotBott // plot area

	minStep, maxStep, lo, hi := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, p := range append(append([]plotPoint{}, train...), eval...) {
		minStep, maxStep = math.Min(minStep, p.step), math.Max(maxStep, p.step)
		lo, hi = math.Min(lo, p.loss), math.Max(hi, p.loss)
	}
	if math.IsInf(lo, 0) { // no points
		minStep, maxStep, lo, hi = 0, 1, 0, 1
	}
	xt := niceTicks(math.Min(minStep, 0), maxStep, 6)
	yt := niceTicks(lo, hi, 5)
	xmin, xmax := xt[0], xt[len(xt)-1]
	ymin, ymax := yt[0], yt[len(yt)-1]
	px := func(p plotPoint) (int, int) {
		x := x0 + int(math.Round((p.step-xmin)/(xmax-xmin)*float64(x1-x0)))
		y := y1 - int(math.Round((p.loss-ymin)/(ymax-ymin)*float64(y1-y0)))
		return x, y
	}
	for _, v := range yt {
		_, y := px(plotPoint{xmin, v})
		hline(img, x0+1, x1, y, plotGrid)
		hline(img, x0-4, x0, y, plotAxis)
		s := tickLabel(v)
		drawText(img, x0-8-textWidth(s), y+4, s, plotText)
	}
	for _, v := range xt {
		x, _ := px(plotPoint{v, ymin})
		vline(img, x, y0, y1-1, plotGrid)
		vline(img, x, y1, y1+4, plotAxis)
		s := tickLabel(v)
		drawText(img, x-textWidth(s)/2, y1+18, s, plotText)
	}
	hline(img, x0, x1, y1, plotAxis)
	vline(img, x0, y0, y1, plotAxis)

	title := lossTitle(run)
	drawText(img, (plotW-textWidth(title))/2, 28, title, plotText)
	drawText(img, (x0+x1-textWidth("step"))/2, plotH-14, "step", plotText)
	drawTextUp(img, 20, (y0+y1+textWidth("loss"))/2, "loss", plotText)

	series := func(pts []plotPoint, c color.Color, dot int) {
		for i, p := range pts {
			x, y := px(p)
			for dx := -dot; dx <= dot; dx++ {
				for dy := -dot; dy <= dot; dy++ {
					img.Set(x+dx, y+dy, c)
				}
			}
			if i > 0 {
				xp, yp := px(pts[i-1])
				line(img, xp, yp, x, y, c)
			}
		}
	}
	series(train, plotTrain, 1)
	series(eval, plotEval, 2)

	// The legend, top right above the plot area.
	lx := x1 - 250
	legend := func(x int, name string, c color.Color) {
		for dy := -1; dy <= 1; dy++ {
			hline(img, x, x+24, 48+dy, c)
		}
		drawText(img, x+30, 52, name, plotText)
	}
	legend(lx, "training loss", plotTrain)
	legend(lx+130, "eval loss", plotEval)
	return img
}

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		pad := math.Max(math.Abs(lo)*0.1, 0.5)
		lo, hi = lo-pad, hi+pad
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for v := math.Floor(lo/step) * step; v < hi+step*0.999; v += step {
		out = append(out, math.Round(v/step)*step)
	}
	return out
}

func tickLabel(v float64) string {
	if v == 0 {
		return "0"
	}
	if math.Abs(v) < 0.01 || math.Abs(v) >= 1e5 {
		return strconv.FormatFloat(v, 'e', 1, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func textWidth(s string) int { return font.MeasureString(plotFace, s).Round() }

// drawText draws s with its baseline at y, starting at x.
func drawText(img draw.Image, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: plotFace, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// drawTextUp draws s rotated a quarter turn anticlockwise (read bottom to
// top), its baseline at x and starting at y.
func drawTextUp(img *image.RGBA, x, y int, s string, c color.Color) {
	w, h := textWidth(s), plotFace.Height
	tmp := image.NewRGBA(image.Rect(0, 0, w, h))
	drawText(tmp, 0, plotFace.Ascent, s, c)
	for ty := 0; ty < h; ty++ {
		for tx := 0; tx < w; tx++ {
			if _, _, _, a := tmp.At(tx, ty).RGBA(); a > 0 {
				img.Set(x-plotFace.Ascent+ty, y-tx, tmp.At(tx, ty))
			}
		}
	}
}

func hline(img *image.RGBA, xa, xb, y int, c color.Color) {
	for x := xa; x <= xb; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, ya, yb int, c color.Color) {
	for y := ya; y <= yb; y++ {
		img.Set(x, y, c)
	}
}

func line(img *image.RGBA, xa, ya, xb, yb int, c color.Color) {
	n := max(abs(xb-xa), abs(yb-ya), 1)
	for k := 0; k <= n; k++ {
		x, y := xa+(xb-xa)*k/n, ya+(yb-ya)*k/n
		img.Set(x, y, c)
		img.Set(x, y+1, c) // two pixels thick
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
