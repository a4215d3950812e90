/** Reading a message body without narrowing it by hand (text, or a shared file). */
import type { FileInfo, MessageBody } from "./types.js";

/** A text message's content, or a file message's caption ("" when it has none). */
export function textOf(body: MessageBody | undefined): string {
  if (!body) return "";
  return body.type === "text" ? body.content : (body.caption ?? "");
}

/** A file message's file metadata, or undefined for any other body. */
export function fileOf(body: MessageBody | undefined): FileInfo | undefined {
  return body?.type === "file" ? body.file : undefined;
}
