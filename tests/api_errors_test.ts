/**
 * server/errors.ts: the api's one error type carries a stable StatusType, and maps to the HTTP
 * answer and the STATUS message through protocol/status_errors.ts.
 */
import { assert, assertEquals } from "./support/assert.ts";
import { ApiError, asApiError, errorResponse, limitReached } from "../server/errors.ts";
import { StatusError, statusOf } from "../protocol/status_errors.ts";

Deno.test("api errors: ApiError is a StatusError whose type is its kind", () => {
  const e = limitReached("max_bytes", 10, "capture reached max_bytes=10");
  assert(e instanceof StatusError);
  assertEquals([e.type, e.kind, e.limit], ["LIMIT_REACHED", "LIMIT_REACHED", {
    name: "max_bytes",
    value: 10,
  }]);
  assertEquals(statusOf(e, "api").type, "LIMIT_REACHED");
});

Deno.test("api errors: errorResponse answers with the type's status and {type, text, limit}", async () => {
  const r = errorResponse(limitReached("concurrent_captures", 4, "too many captures"));
  assertEquals(r.status, 429);
  assertEquals(await r.json(), {
    type: "LIMIT_REACHED",
    text: "too many captures",
    limit: { name: "concurrent_captures", value: 4 },
  });
  const nf = errorResponse(new ApiError("INVALID_REQUEST", "no route GET /x", undefined, 404));
  assertEquals(nf.status, 404);
  assertEquals((await nf.json()).type, "INVALID_REQUEST");
});

Deno.test("api errors: anything else becomes an internal START_CAPTURE_FAILED", () => {
  const kept = new ApiError("PERMISSION_DENIED", "not yours");
  assert(asApiError(kept) === kept);
  const wrapped = asApiError(new TypeError("x is undefined"));
  assertEquals([wrapped.type, wrapped.message], [
    "START_CAPTURE_FAILED",
    "internal error: x is undefined",
  ]);
  assertEquals(asApiError("odd").message, "internal error: odd");
});
