/**
 * Frames have no exported JSON Schema (the gateway builds them by hand), so the frames and
 * history items the real server sends are checked against src/types.ts instead, read
 * with the TypeScript compiler: every field the server sends is declared, every required
 * field is sent, and nested objects (sender, body, file, reactions) recursively.
 */
import { resolve } from "node:path";
import ts from "typescript";

const TYPES_FILE = resolve(import.meta.dirname, "../src/types.ts");
const program = ts.createProgram([TYPES_FILE], { strict: true, target: ts.ScriptTarget.ES2022 });
const checker = program.getTypeChecker();
const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(TYPES_FILE)!)!;
const exported = new Map(checker.getExportsOfModule(moduleSymbol).map((s) => [s.name, s]));

/** Where `value` (JSON from the server) does not fit the exported type `name`. */
export function shapeProblems(name: string, value: unknown): string[] {
  const symbol = exported.get(name);
  if (!symbol) return [`src/types.ts exports no ${name}`];
  return check(checker.getDeclaredTypeOfSymbol(symbol), value, name);
}

function check(type: ts.Type, value: unknown, path: string): string[] {
  const options = type.isUnion() ? type.types : [type];
  if (value === null) {
    return options.some((t) => t.flags & ts.TypeFlags.Null) ? [] : [`${path}: null is not allowed`];
  }
  let best: string[] | undefined;
  for (const option of options) {
    const problems = checkOne(option, value, path);
    if (problems.length === 0) return [];
    if (!best || problems.length < best.length) best = problems;
  }
  return best ?? [`${path}: no type`];
}

function checkOne(type: ts.Type, value: unknown, path: string): string[] {
  const f = type.flags;
  if (f & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return [];
  if (f & (ts.TypeFlags.Null | ts.TypeFlags.Undefined)) return [`${path}: ${JSON.stringify(value)} is not null`];
  if (type.isStringLiteral()) return value === type.value ? [] : [`${path}: ${JSON.stringify(value)} is not "${type.value}"`];
  if (f & ts.TypeFlags.StringLike) return typeof value === "string" ? [] : [`${path}: not a string`];
  if (f & ts.TypeFlags.NumberLike) return typeof value === "number" ? [] : [`${path}: not a number`];
  if (f & ts.TypeFlags.BooleanLike) return typeof value === "boolean" ? [] : [`${path}: not a boolean`];
  if (checker.isArrayType(type)) {
    if (!Array.isArray(value)) return [`${path}: not an array`];
    const element = checker.getTypeArguments(type as ts.TypeReference)[0]!;
    return value.flatMap((item, i) => check(element, item, `${path}[${i}]`));
  }
  if (typeof value !== "object" || Array.isArray(value)) return [`${path}: not an object`];
  const record = value as Record<string, unknown>;
  const props = checker.getPropertiesOfType(type);
  if (props.length === 0) return []; // Record<string, unknown>
  const problems: string[] = [];
  const declared = new Set(props.map((p) => p.name));
  for (const key of Object.keys(record)) {
    if (!declared.has(key)) problems.push(`${path}.${key}: sent by the server, not declared`);
  }
  for (const prop of props) {
    const optional = (prop.flags & ts.SymbolFlags.Optional) !== 0;
    if (!(prop.name in record)) {
      if (!optional) problems.push(`${path}.${prop.name}: declared required, not sent`);
      continue;
    }
    const propType = checker.getNonNullableType(checker.getTypeOfSymbol(prop));
    const v = record[prop.name];
    if (v === null) {
      const raw = checker.getTypeOfSymbol(prop);
      const nullable = (raw.isUnion() ? raw.types : [raw]).some((t) => t.flags & ts.TypeFlags.Null);
      if (!nullable) problems.push(`${path}.${prop.name}: null is not allowed`);
      continue;
    }
    problems.push(...check(propType, v, `${path}.${prop.name}`));
  }
  return problems;
}
