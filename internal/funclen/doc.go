// Package funclen pins the rule that no function in the product and lab
// code (cmd/, daemon/, bpf/, zone/, sim/, internal/) is longer than
// MaxLines: its test parses those trees and fails on each function over
// the limit. Composite literals of slices, arrays and maps (test tables,
// lookup tables) do not count, nor do generated files.
//
// It knows go/ast and the tree's layout, nothing of zonelb's packages.
package funclen

import (
	"go/ast"
	"go/token"
)

// MaxLines is the longest a function may be, counted from its func line
// to its closing brace, tables aside.
const MaxLines = 80

// Lines is fn's length in lines without the lines its slice, array and map
// literals span beyond their first (so a table-driven test is measured by
// its logic, not its cases).
func Lines(fset *token.FileSet, fn *ast.FuncDecl) int {
	n := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
	ast.Inspect(fn.Body, func(node ast.Node) bool {
		cl, ok := node.(*ast.CompositeLit)
		if !ok {
			return true
		}
		switch cl.Type.(type) {
		case *ast.ArrayType, *ast.MapType:
			n -= fset.Position(cl.End()).Line - fset.Position(cl.Pos()).Line
			return false // nested literals are inside the span just taken off
		}
		return true
	})
	return n
}
