/**
 * The REST types of src/types.ts against the JSON Schemas exported from the server's
 * pydantic models (schema/*.json, written by tools/export_schemas.py): same properties,
 * same optionality, compatible types, recursively. Read with the TypeScript compiler, so
 * a field renamed, dropped, made optional or retyped on either side fails here.
 */
import { readdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const HERE = import.meta.dirname;
const SCHEMA_DIR = resolve(HERE, "../schema");
const TYPES_FILE = resolve(HERE, "../src/types.ts");

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  anyOf?: Schema[];
  enum?: unknown[];
  const?: unknown;
  $ref?: string;
  $defs?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  default?: unknown;
}

const program = ts.createProgram([TYPES_FILE], { strict: true, target: ts.ScriptTarget.ES2022 });
const checker = program.getTypeChecker();
const source = program.getSourceFile(TYPES_FILE)!;
const moduleSymbol = checker.getSymbolAtLocation(source)!;
const exported = new Map(checker.getExportsOfModule(moduleSymbol).map((s) => [s.name, s]));

function declaredType(name: string): ts.Type {
  const symbol = exported.get(name);
  if (!symbol) throw new Error(`src/types.ts exports no ${name}`);
  return checker.getDeclaredTypeOfSymbol(symbol);
}

/** Differences between `schema` and `type`, as readable paths. */
function compare(schema: Schema, type: ts.Type, defs: Record<string, Schema>, path: string): string[] {
  if (schema.$ref) return compare(defs[schema.$ref.split("/").pop()!]!, type, defs, path);
  const isNull = (t: ts.Type) => (t.flags & ts.TypeFlags.Null) !== 0;
  const isUndefined = (t: ts.Type) => (t.flags & ts.TypeFlags.Undefined) !== 0;
  const all = type.isUnion() ? type.types : [type];
  const options = schema.anyOf ?? [schema];
  const problems: string[] = [];
  if (options.some((o) => o.type === "null") !== all.some(isNull)) {
    problems.push(`${path}: nullable on one side only (${checker.typeToString(type)})`);
  }
  // Optionality is checked by the caller; here only the value's type counts.
  const members = all.filter((t) => !isNull(t) && !isUndefined(t));
  const nonNull = options.filter((o) => o.type !== "null");
  if (nonNull.length !== 1) {
    return [...problems, `${path}: unhandled union ${JSON.stringify(schema.anyOf).slice(0, 80)}`];
  }
  return [...problems, ...compareValue(nonNull[0]!, members, defs, path)];
}

/** `schema` (not a union with null) against the non-null members of a TypeScript type. */
function compareValue(schema: Schema, members: ts.Type[], defs: Record<string, Schema>, path: string): string[] {
  const shown = members.map((t) => checker.typeToString(t)).join(" | ");
  const single = members.length === 1 ? members[0]! : undefined;
  if (schema.$ref) {
    if (!single) return [`${path}: ${schema.$ref} vs ${shown}`];
    return compare(defs[schema.$ref.split("/").pop()!]!, single, defs, path);
  }
  const flagsAll = (flag: ts.TypeFlags) => members.every((t) => (t.flags & flag) !== 0);
  switch (schema.type) {
    case "string":
      if (schema.enum) {
        const literals = members.map((t) => (t.isStringLiteral() ? t.value : undefined));
        return JSON.stringify([...literals].sort()) === JSON.stringify([...schema.enum].sort())
          ? []
          : [`${path}: enum ${JSON.stringify(schema.enum)} vs ${shown}`];
      }
      return flagsAll(ts.TypeFlags.StringLike) ? [] : [`${path}: string vs ${shown}`];
    case "integer":
    case "number":
      return flagsAll(ts.TypeFlags.NumberLike) ? [] : [`${path}: number vs ${shown}`];
    case "boolean":
      return flagsAll(ts.TypeFlags.BooleanLike) ? [] : [`${path}: boolean vs ${shown}`];
    case "array": {
      const element =
        single && checker.isArrayType(single) ? checker.getTypeArguments(single as ts.TypeReference)[0] : undefined;
      if (!element) return [`${path}: array vs ${shown}`];
      return schema.items ? compare(schema.items, element, defs, `${path}[]`) : [];
    }
    case "object": {
      if (!schema.properties) {
        // A free-form object (dict[str, Any]): any object type will do.
        return single && (single.flags & ts.TypeFlags.Object) !== 0 ? [] : [`${path}: object vs ${shown}`];
      }
      if (!single) return [`${path}: object vs ${shown}`];
      const problems: string[] = [];
      const required = new Set(schema.required ?? []);
      const tsProps = new Map(checker.getPropertiesOfType(single).map((p) => [p.name, p]));
      for (const [name, propSchema] of Object.entries(schema.properties)) {
        const prop = tsProps.get(name);
        if (!prop) {
          problems.push(`${path}.${name}: missing in TypeScript`);
          continue;
        }
        const optional = (prop.flags & ts.SymbolFlags.Optional) !== 0;
        if (optional === required.has(name)) {
          problems.push(`${path}.${name}: ${required.has(name) ? "required" : "optional"} in the schema`);
        }
        problems.push(...compare(propSchema, checker.getTypeOfSymbol(prop), defs, `${path}.${name}`));
      }
      for (const name of tsProps.keys()) {
        if (!(name in schema.properties)) problems.push(`${path}.${name}: not in the schema`);
      }
      return problems;
    }
    default:
      return [`${path}: unhandled schema ${JSON.stringify(schema).slice(0, 80)}`];
  }
}

const files = readdirSync(SCHEMA_DIR).filter((f) => f.endsWith(".json"));

describe("REST types match the server's JSON Schemas", () => {
  it("covers every exported schema", () => {
    expect(files.length).toBeGreaterThanOrEqual(10);
  });
  for (const file of files) {
    const name = file.replace(/\.json$/, "");
    it(name, () => {
      const schema = JSON.parse(readFileSync(resolve(SCHEMA_DIR, file), "utf8")) as Schema;
      expect(compare(schema, declaredType(name), schema.$defs ?? {}, name)).toEqual([]);
    });
  }
  it("catches drift: a schema with a renamed field does not match", () => {
    const schema = JSON.parse(readFileSync(resolve(SCHEMA_DIR, "Member.json"), "utf8")) as Schema;
    schema.properties!.member_id = schema.properties!.user_id!;
    delete schema.properties!.user_id;
    schema.required = ["member_id", "role", "joined_at"];
    expect(compare(schema, declaredType("Member"), {}, "Member")).toEqual([
      "Member.member_id: missing in TypeScript",
      "Member.user_id: not in the schema",
    ]);
  });
});
