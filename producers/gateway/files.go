package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/storage"
)

// The OpenAI Files API (POST /v1/files, GET /v1/files, GET /v1/files/{id},
// GET /v1/files/{id}/content, DELETE /v1/files/{id}) over lf_artifacts:
// an upload streams into files/<id>/content, then its file object goes to
// files/<id>/meta.json, and a copy to lf_files under its id (what GET
// /v1/files lists, rather than every object of lf_artifacts); a file
// exists once its meta does. The results of a
// batch job (created here or by `largeforge submit`) are the files
// file-out-<job> (its successful lines) and file-err-<job> (its failed
// ones), purpose batch_output, rendered in OpenAI's line format from the
// job's output.jsonl the first time they are asked for and stored like an
// upload. Deleting a file leaves a tombstone meta, so a job's results stay
// deleted.

// DefaultMaxFileBytes is the default upload limit (512 MiB).
const DefaultMaxFileBytes = 512 << 20

// File purposes.
const (
	PurposeBatch       = "batch"
	PurposeFineTune    = "fine-tune"
	PurposeBatchOutput = "batch_output"
)

// Prefixes of the ids of a job's result files.
const (
	outputFilePrefix = "file-out-"
	errorFilePrefix  = "file-err-"
)

// FilesConfig configures the Files and Batches APIs.
type FilesConfig struct {
	// MaxFileBytes is the largest upload (default DefaultMaxFileBytes).
	MaxFileBytes int64
	// ModelMap maps the model a batch line names (e.g. gpt-4o-mini) to the
	// served model that runs it (e.g. stories); names not in it are used as
	// they are.
	ModelMap map[string]string
	// PublishLease is how long a gateway publishing a batch's requests
	// holds it without renewing (default DefaultPublishLease); a batch
	// whose gateway died is resumed by another once it runs out.
	PublishLease time.Duration
}

// FileObject is OpenAI's file object.
type FileObject struct {
	ID            string  `json:"id"`
	Object        string  `json:"object"`
	Bytes         int64   `json:"bytes"`
	CreatedAt     int64   `json:"created_at"`
	Filename      string  `json:"filename"`
	Purpose       string  `json:"purpose"`
	Status        string  `json:"status"`
	StatusDetails *string `json:"status_details"`
}

// storedFile is a file's meta.json: its object, or a tombstone.
type storedFile struct {
	FileObject
	Deleted bool `json:"deleted,omitempty"`
}

// files serves the Files API and holds what the Batches API shares with it.
type files struct {
	g     *Gateway
	cfg   FilesConfig
	obj   *pipeline.Objects // lf_artifacts
	index *pipeline.KV      // lf_files: each meta.json by file id
	jobs  *jobs.Store       // lf_jobs

	// indexed: lf_files holds every file (see indexAll).
	indexed  atomic.Bool
	indexing sync.Mutex
}

// registerFiles adds the Files and Batches routes.
func (g *Gateway) registerFiles(ctx context.Context, cfg FilesConfig) error {
	if cfg.MaxFileBytes < 0 {
		return fmt.Errorf("%w: max file bytes %d is negative", ErrInvalidOption, cfg.MaxFileBytes)
	}
	if cfg.MaxFileBytes == 0 {
		cfg.MaxFileBytes = DefaultMaxFileBytes
	}
	if cfg.PublishLease < 0 {
		return fmt.Errorf("%w: publish lease %v is negative", ErrInvalidOption, cfg.PublishLease)
	}
	if cfg.PublishLease == 0 {
		cfg.PublishLease = DefaultPublishLease
	}
	for from, to := range cfg.ModelMap {
		if from == "" || jobs.ValidID(to) != nil {
			return fmt.Errorf("%w: model map %q=%q: want NAME=SERVED with a served model name of letters, digits, '-' and '_'", ErrInvalidOption, from, to)
		}
	}
	obj, err := g.bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		return err
	}
	index, err := g.bus.KV(ctx, pipeline.BucketFiles)
	if err != nil {
		return err
	}
	store, err := jobs.Open(ctx, g.bus)
	if err != nil {
		return err
	}
	f := &files{g: g, cfg: cfg, obj: obj, index: index, jobs: store}
	g.handle("POST /v1/files", "/v1/files", f.upload)
	g.handle("GET /v1/files", "/v1/files", f.list)
	g.handle("GET /v1/files/{id}", "/v1/files/{id}", f.get)
	g.handle("DELETE /v1/files/{id}", "/v1/files/{id}", f.delete)
	g.handle("GET /v1/files/{id}/content", "/v1/files/{id}/content", f.content)
	b := &batches{f: f, id: newPublisherID()}
	g.batches = b
	g.handle("POST /v1/batches", "/v1/batches", b.create)
	g.handle("GET /v1/batches", "/v1/batches", b.list)
	g.handle("GET /v1/batches/{id}", "/v1/batches/{id}", b.get)
	g.handle("POST /v1/batches/{id}/cancel", "/v1/batches/{id}/cancel", b.cancel)
	return nil
}

func newFileID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "file-" + hex.EncodeToString(b[:])
}

// upload serves POST /v1/files: multipart with "file" and "purpose". The
// file streams into the store through a JSONL check; a failure at any
// point leaves nothing.
func (f *files) upload(w http.ResponseWriter, r *http.Request, l zerolog.Logger) {
	ctx := r.Context()
	mr, err := r.MultipartReader()
	if err != nil {
		errInvalid(w, "file", "invalid_request", "Expected a multipart/form-data body with 'file' and 'purpose': %v", err)
		return
	}
	id := newFileID()
	var (
		purpose, filename string
		size              int64
		stored            bool
		fail              = func(status int, param, code, msg string) {
			if stored {
				_ = storage.DeleteObject(context.WithoutCancel(ctx), f.obj, storage.FileContent(id))
			}
			writeError(w, status, "invalid_request_error", param, code, msg)
		}
	)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(http.StatusBadRequest, "", "invalid_request", "Cannot read the multipart body: "+err.Error())
			return
		}
		switch part.FormName() {
		case "purpose":
			b, _ := io.ReadAll(io.LimitReader(part, 64))
			purpose = strings.TrimSpace(string(b))
		case "file":
			if stored {
				fail(http.StatusBadRequest, "file", "invalid_request", "Only one file per upload")
				return
			}
			filename = part.FileName()
			in, err := f.obj.Put(ctx, storage.FileContent(id), newJSONLReader(part, f.cfg.MaxFileBytes))
			switch {
			case errors.Is(err, ErrFileTooLarge):
				fail(http.StatusRequestEntityTooLarge, "file", "file_too_large", fmt.Sprintf("File is over the %d-byte limit", f.cfg.MaxFileBytes))
				return
			case errors.Is(err, ErrNotJSONL):
				fail(http.StatusBadRequest, "file", "invalid_file_format", "Invalid file format: "+unwrapMsg(err))
				return
			case err != nil:
				l.Error().Err(err).Msg("store upload")
				fail(http.StatusInternalServerError, "", "bus_error", "Cannot store the file: "+err.Error())
				return
			}
			stored, size = true, int64(in.Size)
		default:
			fail(http.StatusBadRequest, part.FormName(), CodeUnknownParameter, unknownParam(part.FormName()).Error())
			return
		}
	}
	switch {
	case !stored:
		fail(http.StatusBadRequest, "file", CodeMissingParameter, missingParam("file").Error())
		return
	case purpose == "":
		fail(http.StatusBadRequest, "purpose", CodeMissingParameter, missingParam("purpose").Error())
		return
	case purpose != PurposeBatch && purpose != PurposeFineTune:
		fail(http.StatusBadRequest, "purpose", "invalid_value", fmt.Sprintf("Invalid value for 'purpose': %q; want %q or %q.", purpose, PurposeBatch, PurposeFineTune))
		return
	}
	fo := FileObject{ID: id, Object: "file", Bytes: size, CreatedAt: time.Now().Unix(), Filename: filename, Purpose: purpose, Status: "processed"}
	if err := f.putMeta(ctx, storedFile{FileObject: fo}); err != nil {
		fail(http.StatusInternalServerError, "", "bus_error", "Cannot store the file: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, fo)
}

// unwrapMsg is the message of err after its outermost sentinel.
func unwrapMsg(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ErrNotJSONL.Error()+": "); i >= 0 {
		return s[i+len(ErrNotJSONL.Error())+2:]
	}
	return s
}

// metaKey is the object metadata key holding a copy of a meta.json, so
// that a listing of the store (indexAll's) has the files without reading
// each meta.
const metaKey = "file"

// putMeta stores a file's meta.json, then its copy in lf_files: a file
// whose copy failed is not listed, and the caller's request fails (an
// upload is made again under a new id, a delete asked again).
func (f *files) putMeta(ctx context.Context, sf storedFile) error {
	data, _ := json.Marshal(sf)
	if _, err := f.obj.PutWithMetadata(ctx, storage.FileMeta(sf.ID), map[string]string{metaKey: string(data)}, bytes.NewReader(data)); err != nil {
		return err
	}
	if _, err := f.index.Put(ctx, sf.ID, data); err != nil {
		return fmt.Errorf("index file %s: %w", sf.ID, err)
	}
	return nil
}

// indexComplete is the lf_files key that says every file stored before
// the bucket existed has its entry (not a file id: those start "file-").
const indexComplete = "index-complete"

// indexAll makes lf_files hold every file, once per bus: the files stored
// by a gateway older than the bucket have a meta.json and no entry, so the
// first listing after an upgrade reads lf_artifacts' metas as listings
// did before and creates the entries missing (an entry already there was
// written by putMeta since, and is newer), then writes indexComplete.
func (f *files) indexAll(ctx context.Context) error {
	if f.indexed.Load() {
		return nil
	}
	f.indexing.Lock()
	defer f.indexing.Unlock()
	if f.indexed.Load() {
		return nil
	}
	switch _, err := f.index.Get(ctx, indexComplete); {
	case err == nil:
		f.indexed.Store(true)
		return nil
	case !errors.Is(err, pipeline.ErrKeyNotFound):
		return err
	}
	infos, err := f.obj.List(ctx)
	if err != nil {
		return err
	}
	for _, in := range infos {
		id, ok := storage.FileIDOfMeta(in.Name)
		if !ok {
			continue
		}
		data := []byte(in.Metadata[metaKey])
		var sf storedFile
		if json.Unmarshal(data, &sf) != nil {
			if err := readSmall(ctx, f.obj, in.Name, &sf); err != nil { // a meta stored without its copy
				if errors.Is(err, storage.ErrNotFound) {
					continue // deleted meanwhile
				}
				return err
			}
			data, _ = json.Marshal(sf)
		}
		if _, err := f.index.Create(ctx, id, data); err != nil && !errors.Is(err, pipeline.ErrKeyExists) {
			return fmt.Errorf("index file %s: %w", id, err)
		}
	}
	if _, err := f.index.Put(ctx, indexComplete, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		return err
	}
	f.indexed.Store(true)
	return nil
}

// readSmall reads a small object whole (a meta or a batch record).
func readSmall(ctx context.Context, obj *pipeline.Objects, key string, v any) error {
	r, err := obj.Get(ctx, key)
	if errors.Is(err, pipeline.ErrObjectNotFound) {
		return fmt.Errorf("%w: %s", storage.ErrNotFound, key)
	}
	if err != nil {
		return err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// lookup returns the file of id: its meta, or, for a job's result file
// not rendered yet, the file rendered now. A tombstone or an unknown id is
// ErrNoFile.
func (f *files) lookup(ctx context.Context, id string) (FileObject, error) {
	if !validFileID(id) {
		return FileObject{}, fmt.Errorf("%w: %s", ErrNoFile, id)
	}
	var sf storedFile
	err := readSmall(ctx, f.obj, storage.FileMeta(id), &sf)
	switch {
	case err == nil && sf.Deleted:
		return FileObject{}, fmt.Errorf("%w: %s (deleted)", ErrNoFile, id)
	case err == nil:
		return sf.FileObject, nil
	case !errors.Is(err, storage.ErrNotFound):
		return FileObject{}, err
	}
	cands, errs := resultFileJobs(id)
	for _, job := range cands {
		j, err := f.jobs.Get(ctx, job)
		if errors.Is(err, jobs.ErrNotFound) {
			continue
		}
		if err != nil {
			return FileObject{}, err
		}
		if fid, ok := resultFileID(j, errs); ok && fid == id {
			return f.render(ctx, j, errs)
		}
	}
	return FileObject{}, fmt.Errorf("%w: %s (no job has such results now)", ErrNoFile, id)
}

// validFileID: file- and letters, digits, '-' and '_' (a key element).
func validFileID(id string) bool {
	rest, ok := strings.CutPrefix(id, "file-")
	return ok && rest != "" && len(id) <= 128 && strings.Trim(rest, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == ""
}

// resultFileJobs returns the jobs a result file id may be of (none for
// another id) and its kind: the rest of the id after its prefix is a job
// id, or, when it ends in -r<N>, a job id and a generation (job ids may
// hold '-' themselves; lookup tries each).
func resultFileJobs(id string) (cands []string, errs bool) {
	rest, ok := strings.CutPrefix(id, outputFilePrefix)
	if !ok {
		if rest, ok = strings.CutPrefix(id, errorFilePrefix); !ok {
			return nil, false
		}
		errs = true
	}
	if jobs.ValidID(rest) == nil {
		cands = append(cands, rest)
	}
	if i := strings.LastIndex(rest, generationSep); i > 0 {
		if n, err := strconv.Atoi(rest[i+len(generationSep):]); err == nil && n > 0 && jobs.ValidID(rest[:i]) == nil {
			cands = append(cands, rest[:i])
		}
	}
	return cands, errs
}

// generationSep precedes a result file id's generation.
const generationSep = "-r"

// resultFileID is the id of a finished job's output (errs false) or error
// file, when it has one: OpenAI's output file holds the successful
// requests and exists only when one succeeded; the error file, the failed.
// A job finalized again after `largeforge dlq replay` replaced rows of it
// (Job.Replaced, which only grows) has new ids, ending -r<N> with N its
// replaced rows so far: its batch names them, and a file rendered before
// keeps its id and content.
func resultFileID(j jobs.Job, errs bool) (string, bool) {
	if !j.Status.Terminal() || j.Outputs.Output == "" {
		return "", false
	}
	id, ok := outputFilePrefix+j.ID, j.RequestCounts.Completed > 0
	if errs {
		id, ok = errorFilePrefix+j.ID, j.RequestCounts.Failed > 0
	}
	if n := len(j.Replaced); n > 0 {
		id += generationSep + strconv.Itoa(n)
	}
	return id, ok
}

// render writes a job's output or error file in OpenAI's line format to
// files/<id>/content and its meta, and returns its object. Two gateways
// rendering at once write the same bytes.
func (f *files) render(ctx context.Context, j jobs.Job, errs bool) (FileObject, error) {
	id, _ := resultFileID(j, errs)
	src := j.Outputs.Output
	if errs {
		src = j.Outputs.Errors
	}
	r, err := f.obj.Get(ctx, src)
	if err != nil {
		return FileObject{}, fmt.Errorf("job %s: read %s: %w", j.ID, src, err)
	}
	defer r.Close()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(renderLines(pw, r, !errs)) }()
	in, err := f.obj.Put(ctx, storage.FileContent(id), pr)
	pr.CloseWithError(errors.New("render ended"))
	if err != nil {
		return FileObject{}, fmt.Errorf("job %s: render %s: %w", j.ID, id, err)
	}
	fo := resultFile(j, errs)
	fo.Bytes = int64(in.Size)
	return fo, f.putMeta(ctx, storedFile{FileObject: fo})
}

// resultFile is the object of a finished job's output (errs false) or
// error file, but for its size, known once it is rendered.
func resultFile(j jobs.Job, errs bool) FileObject {
	id, _ := resultFileID(j, errs)
	at := j.CompletedAt
	for _, t := range []int64{j.CancelledAt, j.ExpiredAt, j.FailedAt, j.CreatedAt} {
		if at == 0 {
			at = t
		}
	}
	name := "batch_" + strings.TrimPrefix(j.ID, "batch_") + "_output.jsonl"
	if errs {
		name = "batch_" + strings.TrimPrefix(j.ID, "batch_") + "_error.jsonl"
	}
	return FileObject{ID: id, Object: "file", CreatedAt: at, Filename: name, Purpose: PurposeBatchOutput, Status: "processed"}
}

// list serves GET /v1/files (purpose, limit, after, order).
func (f *files) list(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	ctx := r.Context()
	q := r.URL.Query()
	limit, ok := listLimit(w, q.Get("limit"), 10000)
	if !ok {
		return
	}
	order := q.Get("order")
	if order == "" {
		order = "desc"
	}
	if order != "asc" && order != "desc" {
		errInvalid(w, "order", "invalid_value", "Invalid value for 'order': %q; want asc or desc.", order)
		return
	}
	all, err := f.all(ctx)
	if err != nil {
		errServer(w, err)
		return
	}
	purpose := q.Get("purpose")
	out := make([]listedFile, 0, len(all))
	for _, lf := range all {
		if purpose == "" || lf.Purpose == purpose {
			out = append(out, lf)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if order == "desc" {
			a, b = b, a
		}
		return a.CreatedAt < b.CreatedAt || (a.CreatedAt == b.CreatedAt && a.ID < b.ID)
	})
	p := page(out, q.Get("after"), limit, func(lf listedFile) string { return lf.ID })
	res := listPage[FileObject]{Object: p.Object, FirstID: p.FirstID, LastID: p.LastID, HasMore: p.HasMore, Data: make([]FileObject, 0, len(p.Data))}
	for _, lf := range p.Data {
		if lf.job != nil { // only the result files on the page are rendered
			if lf.FileObject, err = f.render(ctx, *lf.job, lf.errs); err != nil {
				errServer(w, err)
				return
			}
		}
		res.Data = append(res.Data, lf.FileObject)
	}
	writeJSON(w, http.StatusOK, res)
}

// listedFile is a file in a listing: stored, or a job's result file not
// rendered yet (job set).
type listedFile struct {
	FileObject
	job  *jobs.Job
	errs bool
}

// all returns every file: the stored ones (tombstones left out), read from
// lf_files, and the result files of finished jobs not rendered yet
// (rendered when a listing's page holds them).
func (f *files) all(ctx context.Context) ([]listedFile, error) {
	if err := f.indexAll(ctx); err != nil {
		return nil, err
	}
	entries, err := f.index.Values(ctx, "*")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []listedFile
	for _, e := range entries {
		if !validFileID(e.Key) {
			continue // indexComplete
		}
		var sf storedFile
		if err := json.Unmarshal(e.Value, &sf); err != nil {
			return nil, fmt.Errorf("%s %s: %w", pipeline.BucketFiles, e.Key, err)
		}
		seen[e.Key] = true
		if !sf.Deleted {
			out = append(out, listedFile{FileObject: sf.FileObject})
		}
	}
	js, err := f.jobs.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, j := range js {
		for _, errs := range []bool{false, true} {
			if id, ok := resultFileID(j, errs); ok && !seen[id] {
				out = append(out, listedFile{FileObject: resultFile(j, errs), job: &j, errs: errs})
			}
		}
	}
	return out, nil
}

// listLimit parses a list's limit (1 to 10000; def when absent).
func listLimit(w http.ResponseWriter, s string, def int) (int, bool) {
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 10000 {
		errInvalid(w, "limit", "invalid_value", "Invalid value for 'limit': %q; want an integer from 1 to 10000.", s)
		return 0, false
	}
	return n, true
}

// listPage is OpenAI's cursor page.
type listPage[T any] struct {
	Object  string  `json:"object"`
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

// page returns the items after the one whose id is after (all when after
// is empty or absent), at most limit.
func page[T any](items []T, after string, limit int, id func(T) string) listPage[T] {
	if after != "" {
		for i, it := range items {
			if id(it) == after {
				items = items[i+1:]
				break
			}
		}
	}
	p := listPage[T]{Object: "list", Data: items}
	if len(items) > limit {
		p.Data, p.HasMore = items[:limit], true
	}
	if len(p.Data) > 0 {
		first, last := id(p.Data[0]), id(p.Data[len(p.Data)-1])
		p.FirstID, p.LastID = &first, &last
	}
	if p.Data == nil {
		p.Data = []T{}
	}
	return p
}

// get serves GET /v1/files/{id}.
func (f *files) get(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	fo, ok := f.found(w, r)
	if ok {
		writeJSON(w, http.StatusOK, fo)
	}
}

// found looks up the file of the path's id, answering 404 or 500 itself.
func (f *files) found(w http.ResponseWriter, r *http.Request) (FileObject, bool) {
	id := r.PathValue("id")
	fo, err := f.lookup(r.Context(), id)
	switch {
	case errors.Is(err, ErrNoFile):
		errNoSuch(w, "File", id)
		return fo, false
	case err != nil:
		errServer(w, err)
		return fo, false
	}
	return fo, true
}

// content serves GET /v1/files/{id}/content, streamed from the store.
func (f *files) content(w http.ResponseWriter, r *http.Request, l zerolog.Logger) {
	fo, ok := f.found(w, r)
	if !ok {
		return
	}
	rd, err := f.obj.Get(r.Context(), storage.FileContent(fo.ID))
	if err != nil {
		errServer(w, err)
		return
	}
	defer rd.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(fo.Bytes, 10))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rd); err != nil {
		l.Warn().Err(err).Str("file", fo.ID).Msg("file content cut short")
	}
}

// delete serves DELETE /v1/files/{id}: the content goes, a tombstone meta
// stays.
func (f *files) delete(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	fo, ok := f.found(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	if err := f.putMeta(ctx, storedFile{FileObject: FileObject{ID: fo.ID}, Deleted: true}); err != nil {
		errServer(w, err)
		return
	}
	if err := storage.DeleteObject(ctx, f.obj, storage.FileContent(fo.ID)); err != nil && !errors.Is(err, storage.ErrNotFound) {
		errServer(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": fo.ID, "object": "file", "deleted": true})
}

// jsonlReader passes a file through while checking that every non-blank
// line is a JSON object and that it stays within max bytes; it holds one
// line at a time.
type jsonlReader struct {
	r    *bufio.Reader
	max  int64
	n    int64
	line int
	cur  []byte // the current line so far
	out  []byte // checked bytes not yet returned
	err  error
}

func newJSONLReader(r io.Reader, max int64) *jsonlReader {
	return &jsonlReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// maxLine is the longest line checked: a request must fit one message.
const maxLine = pipeline.MaxMsgSize

func (j *jsonlReader) Read(p []byte) (int, error) {
	for len(j.out) == 0 && j.err == nil {
		chunk, err := j.r.ReadSlice('\n')
		j.n += int64(len(chunk))
		if j.n > j.max {
			j.err = fmt.Errorf("%w: over %d bytes", ErrFileTooLarge, j.max)
			break
		}
		j.cur = append(j.cur, chunk...)
		if len(j.cur) > maxLine {
			j.err = fmt.Errorf("%w: line %d is longer than %d bytes", ErrNotJSONL, j.line+1, maxLine)
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if len(j.cur) > 0 {
			j.line++
			if t := bytes.TrimSpace(j.cur); len(t) > 0 && (t[0] != '{' || !json.Valid(t)) {
				j.err = fmt.Errorf("%w: line %d is not a JSON object", ErrNotJSONL, j.line)
				break
			}
			j.out, j.cur = append(j.out[:0], j.cur...), j.cur[:0]
		}
		if err != nil {
			j.err = err
		}
	}
	if len(j.out) > 0 {
		n := copy(p, j.out)
		j.out = j.out[n:]
		return n, nil
	}
	return 0, j.err
}

// OpenFile opens the content of file id of the Files API in lf_artifacts
// (obj), for a reader outside the gateway (`largeforge submit --file-id`):
// its object, and ErrNoFile for an id never uploaded or deleted. A job's
// result file is found once it has been rendered.
func OpenFile(ctx context.Context, obj *pipeline.Objects, id string) (io.ReadCloser, FileObject, error) {
	if !validFileID(id) {
		return nil, FileObject{}, fmt.Errorf("%w: %q is not a file id", ErrNoFile, id)
	}
	var sf storedFile
	switch err := readSmall(ctx, obj, storage.FileMeta(id), &sf); {
	case errors.Is(err, storage.ErrNotFound):
		return nil, FileObject{}, fmt.Errorf("%w: %s", ErrNoFile, id)
	case err != nil:
		return nil, FileObject{}, err
	case sf.Deleted:
		return nil, FileObject{}, fmt.Errorf("%w: %s (deleted)", ErrNoFile, id)
	}
	r, err := obj.Get(ctx, storage.FileContent(id))
	if errors.Is(err, pipeline.ErrObjectNotFound) {
		return nil, FileObject{}, fmt.Errorf("%w: %s (its content is gone)", ErrNoFile, id)
	}
	if err != nil {
		return nil, FileObject{}, fmt.Errorf("read %s: %w", id, err)
	}
	return r, sf.FileObject, nil
}
