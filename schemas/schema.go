package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed jsonschema/*.json
var schemaFS embed.FS

// SchemaJSON returns the §1 JSON Schema of f exactly as the data dictionary
// writes it, or nil for an unknown format.
func SchemaJSON(f Format) []byte {
	if !f.Valid() {
		return nil
	}
	b, err := schemaFS.ReadFile("jsonschema/" + string(f) + ".json")
	if err != nil {
		return nil
	}
	return b
}

var (
	compileOnce sync.Once
	compiled    map[Format]*jsonschema.Schema
	compileErr  error
)

func compileSchemas() {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	compiled = make(map[Format]*jsonschema.Schema, 3)
	for _, f := range Formats() {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(SchemaJSON(f)))
		if err != nil {
			compileErr = fmt.Errorf("parse %s schema: %w", f, err)
			return
		}
		url := "largeforge:///schemas/" + string(f) + ".json"
		if err := c.AddResource(url, doc); err != nil {
			compileErr = fmt.Errorf("add %s schema: %w", f, err)
			return
		}
		sch, err := c.Compile(url)
		if err != nil {
			compileErr = fmt.Errorf("compile %s schema: %w", f, err)
			return
		}
		compiled[f] = sch
	}
}

// Schema returns the compiled §1 JSON Schema of f (draft-07), or nil for an
// unknown format. The embedded schemas are fixed, so compiling them cannot
// fail at run time; a test checks it.
//
// DecodeRecord does not use it: it is the reference the fast path is tested
// against, and a slow path for callers that want a JSON Schema library's own
// error output (use ValidateWithSchema).
func Schema(f Format) *jsonschema.Schema {
	compileOnce.Do(compileSchemas)
	if compileErr != nil {
		panic("schemas: embedded JSON Schema does not compile: " + compileErr.Error())
	}
	return compiled[f]
}

// ValidateWithSchema validates one JSON document against f's compiled JSON
// Schema using the JSON Schema library alone (slow; DecodeRecord is the fast
// path and accepts the same documents). Invalid UTF-8 and lone UTF-16
// surrogate escapes are rejected as DecodeRecord rejects them. The error is a *ValidationError with rule "json",
// "utf8" or "schema" (the library's message).
func ValidateWithSchema(f Format, data []byte) error {
	sch := Schema(f)
	if sch == nil {
		_, err := ParseFormat(string(f))
		return err
	}
	if !validUTF8(data) {
		return newValidationError("", "utf8", "invalid UTF-8 in string")
	}
	s := scanner{data: data}
	if err := s.skipValue(); errors.Is(err, errLoneSurrogate) {
		return scanError("", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return newValidationError("", "json", "invalid JSON: %v", err)
	}
	if err := sch.Validate(doc); err != nil {
		return newValidationError("", "schema", "%v", err)
	}
	return nil
}
