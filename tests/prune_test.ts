import assert from "node:assert/strict";
import { type KeepOptions, pruneMarks } from "../lib/backup/prune.ts";

/**
 * One case: backups named by their local time with its UTC offset (so the table reads as the
 * wall clock of `timeZone`), a `*` suffix for protected ones, and the expected mark of each,
 * newest first: the option that kept it, `protected` or `remove`.
 */
interface Case {
  name: string;
  timeZone: string;
  keep: KeepOptions;
  backups: string[];
  expect: [string, string][];
}

const VIENNA = "Europe/Vienna";

const CASES: Case[] = [
  {
    name: "no option keeps everything, protected stays protected",
    timeZone: VIENNA,
    keep: {},
    backups: ["2023-06-01T10:00+02:00", "2023-06-02T10:00+02:00*", "2023-06-03T10:00+02:00"],
    expect: [
      ["2023-06-03T10:00+02:00", "keep-all"],
      ["2023-06-02T10:00+02:00*", "protected"],
      ["2023-06-01T10:00+02:00", "keep-all"],
    ],
  },
  {
    name: "options that are all 0 keep everything",
    timeZone: VIENNA,
    keep: { "keep-last": 0, "keep-daily": 0, "keep-all": 0 },
    backups: ["2023-06-01T10:00+02:00", "2023-06-02T10:00+02:00"],
    expect: [
      ["2023-06-02T10:00+02:00", "keep-all"],
      ["2023-06-01T10:00+02:00", "keep-all"],
    ],
  },
  {
    name: "keep-all wins over every other option",
    timeZone: VIENNA,
    keep: { "keep-all": 1, "keep-last": 1 },
    backups: ["2023-06-01T10:00+02:00*", "2023-06-02T10:00+02:00", "2023-06-03T10:00+02:00"],
    expect: [
      ["2023-06-03T10:00+02:00", "keep-all"],
      ["2023-06-02T10:00+02:00", "keep-all"],
      ["2023-06-01T10:00+02:00*", "protected"],
    ],
  },
  {
    name: "keep-last keeps the newest N in any input order",
    timeZone: VIENNA,
    keep: { "keep-last": 2 },
    backups: [
      "2023-06-02T10:00+02:00",
      "2023-06-04T10:00+02:00",
      "2023-06-01T10:00+02:00",
      "2023-06-03T10:00+02:00",
    ],
    expect: [
      ["2023-06-04T10:00+02:00", "keep-last"],
      ["2023-06-03T10:00+02:00", "keep-last"],
      ["2023-06-02T10:00+02:00", "remove"],
      ["2023-06-01T10:00+02:00", "remove"],
    ],
  },
  {
    name: "protected backups are kept and do not use up keep-last",
    timeZone: VIENNA,
    keep: { "keep-last": 2 },
    backups: [
      "2023-06-05T10:00+02:00*",
      "2023-06-04T10:00+02:00",
      "2023-06-03T10:00+02:00*",
      "2023-06-02T10:00+02:00",
      "2023-06-01T10:00+02:00",
    ],
    expect: [
      ["2023-06-05T10:00+02:00*", "protected"],
      ["2023-06-04T10:00+02:00", "keep-last"],
      ["2023-06-03T10:00+02:00*", "protected"],
      ["2023-06-02T10:00+02:00", "keep-last"],
      ["2023-06-01T10:00+02:00", "remove"],
    ],
  },
  {
    name: "a protected backup does not fill its day: keep-daily keeps the newest unprotected one",
    timeZone: VIENNA,
    keep: { "keep-daily": 1 },
    backups: ["2023-06-02T20:00+02:00*", "2023-06-02T08:00+02:00", "2023-06-02T06:00+02:00"],
    expect: [
      ["2023-06-02T20:00+02:00*", "protected"],
      ["2023-06-02T08:00+02:00", "keep-daily"],
      ["2023-06-02T06:00+02:00", "remove"],
    ],
  },
  {
    name: "keep-last counts distinct times: a second backup with the same time is removed",
    timeZone: "UTC",
    keep: { "keep-last": 2 },
    backups: ["2023-06-03T10:00Z", "2023-06-03T10:00Z", "2023-06-02T10:00Z", "2023-06-01T10:00Z"],
    expect: [
      ["2023-06-03T10:00Z", "keep-last"],
      ["2023-06-03T10:00Z", "remove"],
      ["2023-06-02T10:00Z", "keep-last"],
      ["2023-06-01T10:00Z", "remove"],
    ],
  },
  {
    name: "keep-last then keep-daily: the day keep-last already covers is skipped",
    timeZone: VIENNA,
    keep: { "keep-last": 1, "keep-daily": 2 },
    backups: [
      "2023-06-03T18:00+02:00",
      "2023-06-03T06:00+02:00",
      "2023-06-02T18:00+02:00",
      "2023-06-02T06:00+02:00",
      "2023-06-01T18:00+02:00",
      "2023-05-31T18:00+02:00",
    ],
    expect: [
      ["2023-06-03T18:00+02:00", "keep-last"],
      ["2023-06-03T06:00+02:00", "remove"],
      ["2023-06-02T18:00+02:00", "keep-daily"],
      ["2023-06-02T06:00+02:00", "remove"],
      ["2023-06-01T18:00+02:00", "keep-daily"],
      ["2023-05-31T18:00+02:00", "remove"],
    ],
  },
  {
    name: "every option once: each keeps the newest backup of a period no earlier option covers",
    timeZone: VIENNA,
    keep: {
      "keep-last": 1,
      "keep-hourly": 1,
      "keep-daily": 1,
      "keep-weekly": 1,
      "keep-monthly": 1,
      "keep-yearly": 1,
    },
    backups: [
      "2023-06-15T10:30+02:00", // Thursday of week 24
      "2023-06-15T10:10+02:00",
      "2023-06-15T09:00+02:00",
      "2023-06-14T20:00+02:00",
      "2023-06-12T20:00+02:00", // Monday of week 24
      "2023-06-05T20:00+02:00", // week 23
      "2023-05-20T20:00+02:00",
      "2022-11-01T20:00+01:00",
      "2021-11-01T20:00+01:00",
    ],
    expect: [
      ["2023-06-15T10:30+02:00", "keep-last"],
      ["2023-06-15T10:10+02:00", "remove"],
      ["2023-06-15T09:00+02:00", "keep-hourly"],
      ["2023-06-14T20:00+02:00", "keep-daily"],
      ["2023-06-12T20:00+02:00", "remove"],
      ["2023-06-05T20:00+02:00", "keep-weekly"],
      ["2023-05-20T20:00+02:00", "keep-monthly"],
      ["2022-11-01T20:00+01:00", "keep-yearly"],
      ["2021-11-01T20:00+01:00", "remove"],
    ],
  },
  {
    name: "spring DST change (Vienna): local days of 23 hours decide keep-daily",
    timeZone: VIENNA,
    keep: { "keep-daily": 2 },
    backups: [
      "2021-03-29T00:30+02:00",
      "2021-03-28T23:30+02:00",
      "2021-03-28T00:30+01:00",
      "2021-03-27T23:30+01:00",
    ],
    expect: [
      ["2021-03-29T00:30+02:00", "keep-daily"],
      ["2021-03-28T23:30+02:00", "keep-daily"],
      ["2021-03-28T00:30+01:00", "remove"],
      ["2021-03-27T23:30+01:00", "remove"],
    ],
  },
  {
    name: "the same instants in UTC fall on other days",
    timeZone: "UTC",
    keep: { "keep-daily": 2 },
    backups: [
      "2021-03-29T00:30+02:00", // 03-28 22:30 UTC
      "2021-03-28T23:30+02:00", // 03-28 21:30 UTC
      "2021-03-28T00:30+01:00", // 03-27 23:30 UTC
      "2021-03-27T23:30+01:00", // 03-27 22:30 UTC
    ],
    expect: [
      ["2021-03-29T00:30+02:00", "keep-daily"],
      ["2021-03-28T23:30+02:00", "remove"],
      ["2021-03-28T00:30+01:00", "keep-daily"],
      ["2021-03-27T23:30+01:00", "remove"],
    ],
  },
  {
    name: "spring DST change (Vienna): 01:xx CET and 03:xx CEST are different hours",
    timeZone: VIENNA,
    keep: { "keep-hourly": 2 },
    backups: [
      "2021-03-28T03:40+02:00",
      "2021-03-28T03:10+02:00",
      "2021-03-28T01:30+01:00",
      "2021-03-28T00:30+01:00",
    ],
    expect: [
      ["2021-03-28T03:40+02:00", "keep-hourly"],
      ["2021-03-28T03:10+02:00", "remove"],
      ["2021-03-28T01:30+01:00", "keep-hourly"],
      ["2021-03-28T00:30+01:00", "remove"],
    ],
  },
  {
    name: "autumn DST change (Vienna): the repeated hour 02:xx is one hourly period",
    timeZone: VIENNA,
    keep: { "keep-hourly": 3 },
    backups: [
      "2021-10-31T03:10+01:00",
      "2021-10-31T02:40+01:00",
      "2021-10-31T02:10+01:00",
      "2021-10-31T02:40+02:00",
      "2021-10-31T02:10+02:00",
      "2021-10-31T01:30+02:00",
      "2021-10-31T00:30+02:00",
    ],
    expect: [
      ["2021-10-31T03:10+01:00", "keep-hourly"],
      ["2021-10-31T02:40+01:00", "keep-hourly"],
      ["2021-10-31T02:10+01:00", "remove"],
      ["2021-10-31T02:40+02:00", "remove"],
      ["2021-10-31T02:10+02:00", "remove"],
      ["2021-10-31T01:30+02:00", "keep-hourly"],
      ["2021-10-31T00:30+02:00", "remove"],
    ],
  },
  {
    name: "ISO week 53 of 2020 spans the new year: 2020-12-31 to 2021-01-03 is one week",
    timeZone: VIENNA,
    keep: { "keep-weekly": 3 },
    backups: [
      "2021-01-04T12:00+01:00", // Monday, 2021-W01
      "2021-01-03T12:00+01:00", // Sunday, 2020-W53
      "2021-01-01T12:00+01:00", // 2020-W53
      "2020-12-31T12:00+01:00", // 2020-W53
      "2020-12-28T12:00+01:00", // Monday, 2020-W53
      "2020-12-27T12:00+01:00", // Sunday, 2020-W52
      "2020-12-20T12:00+01:00", // 2020-W51
    ],
    expect: [
      ["2021-01-04T12:00+01:00", "keep-weekly"],
      ["2021-01-03T12:00+01:00", "keep-weekly"],
      ["2021-01-01T12:00+01:00", "remove"],
      ["2020-12-31T12:00+01:00", "remove"],
      ["2020-12-28T12:00+01:00", "remove"],
      ["2020-12-27T12:00+01:00", "keep-weekly"],
      ["2020-12-20T12:00+01:00", "remove"],
    ],
  },
  {
    name: "ISO week-year differs from the calendar year: 2024-12-30 is in 2025-W01",
    timeZone: VIENNA,
    keep: { "keep-weekly": 2 },
    backups: [
      "2025-01-05T12:00+01:00",
      "2024-12-30T12:00+01:00",
      "2024-12-29T12:00+01:00",
      "2024-12-23T12:00+01:00",
    ],
    expect: [
      ["2025-01-05T12:00+01:00", "keep-weekly"],
      ["2024-12-30T12:00+01:00", "remove"],
      ["2024-12-29T12:00+01:00", "keep-weekly"],
      ["2024-12-23T12:00+01:00", "remove"],
    ],
  },
  {
    name: "keep-monthly and keep-yearly across the new year in local time",
    timeZone: VIENNA,
    keep: { "keep-monthly": 1, "keep-yearly": 2 },
    backups: [
      "2021-01-01T00:30+01:00", // still 2020 in UTC
      "2020-12-31T12:00+01:00",
      "2020-12-01T12:00+01:00",
      "2020-06-01T12:00+02:00",
      "2019-03-01T12:00+01:00",
    ],
    expect: [
      ["2021-01-01T00:30+01:00", "keep-monthly"],
      ["2020-12-31T12:00+01:00", "keep-yearly"],
      ["2020-12-01T12:00+01:00", "remove"],
      ["2020-06-01T12:00+02:00", "remove"],
      ["2019-03-01T12:00+01:00", "keep-yearly"],
    ],
  },
  {
    name: "keep-yearly in UTC puts the new-year backup into 2020",
    timeZone: "UTC",
    keep: { "keep-yearly": 2 },
    backups: [
      "2021-01-01T00:30+01:00",
      "2020-12-31T12:00+01:00",
      "2020-06-01T12:00+02:00",
      "2019-03-01T12:00+01:00",
    ],
    expect: [
      ["2021-01-01T00:30+01:00", "keep-yearly"],
      ["2020-12-31T12:00+01:00", "remove"],
      ["2020-06-01T12:00+02:00", "remove"],
      ["2019-03-01T12:00+01:00", "keep-yearly"],
    ],
  },
  {
    name: "fewer periods than N keeps one per period and removes the rest",
    timeZone: VIENNA,
    keep: { "keep-daily": 7 },
    backups: ["2023-06-02T20:00+02:00", "2023-06-02T08:00+02:00", "2023-06-01T20:00+02:00"],
    expect: [
      ["2023-06-02T20:00+02:00", "keep-daily"],
      ["2023-06-02T08:00+02:00", "remove"],
      ["2023-06-01T20:00+02:00", "keep-daily"],
    ],
  },
  {
    name: "keep-all=0 beside a count is not keep-all: the count applies",
    timeZone: "UTC",
    keep: { "keep-all": 0, "keep-last": 1 },
    backups: ["2023-06-02T10:00Z", "2023-06-01T10:00Z"],
    expect: [
      ["2023-06-02T10:00Z", "keep-last"],
      ["2023-06-01T10:00Z", "remove"],
    ],
  },
  {
    name: "keep-hourly skips the hour keep-last covers and keeps N further hours",
    timeZone: VIENNA,
    keep: { "keep-last": 1, "keep-hourly": 2 },
    backups: [
      "2023-06-01T10:50+02:00",
      "2023-06-01T10:20+02:00",
      "2023-06-01T09:30+02:00",
      "2023-06-01T08:30+02:00",
      "2023-06-01T07:30+02:00",
    ],
    expect: [
      ["2023-06-01T10:50+02:00", "keep-last"],
      ["2023-06-01T10:20+02:00", "remove"],
      ["2023-06-01T09:30+02:00", "keep-hourly"],
      ["2023-06-01T08:30+02:00", "keep-hourly"],
      ["2023-06-01T07:30+02:00", "remove"],
    ],
  },
  {
    name: "an empty group has nothing to mark",
    timeZone: VIENNA,
    keep: { "keep-last": 3 },
    backups: [],
    expect: [],
  },
];

function seconds(name: string): number {
  const ms = Date.parse(name.replace(/\*$/, ""));
  assert.ok(Number.isFinite(ms), `bad time in test table: ${name}`);
  return ms / 1000;
}

for (const c of CASES) {
  Deno.test(`prune: ${c.name}`, () => {
    const backups = c.backups.map((id) => ({
      id,
      time: seconds(id),
      protected: id.endsWith("*"),
    }));
    const marks = pruneMarks(backups, c.keep, { timeZone: c.timeZone });
    const got = marks.map((m) => [m.id, m.mark === "keep" ? m.reason : m.mark]);
    assert.deepEqual(got, c.expect);
    for (const m of marks) assert.equal(m.time, seconds(m.id));
  });
}

Deno.test("prune: the default time zone is the process's", () => {
  const backups = [
    { id: "a", time: seconds("2021-03-28T00:30+01:00") },
    { id: "b", time: seconds("2021-03-27T23:30+01:00") },
  ];
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  assert.deepEqual(
    pruneMarks(backups, { "keep-daily": 5 }),
    pruneMarks(backups, { "keep-daily": 5 }, { timeZone: zone }),
  );
});

Deno.test("prune: rejects negative or fractional counts, unknown options and time zones", () => {
  const one = [{ id: "a", time: 0 }];
  assert.throws(() => pruneMarks(one, { "keep-last": -1 }), RangeError);
  assert.throws(() => pruneMarks(one, { "keep-daily": 1.5 }), /non-negative integer/);
  assert.throws(() => pruneMarks(one, { "keep-often": 1 } as KeepOptions), /unknown prune option/);
  assert.throws(
    () => pruneMarks(one, { "keep-daily": 1 }, { timeZone: "Mars/Olympus" }),
    /unknown time zone 'Mars\/Olympus'/,
  );
});

Deno.test("prune: keep-all given as a boolean", () => {
  const marks = pruneMarks([{ id: "a", time: 0 }, { id: "b", time: 1 }], {
    "keep-all": true,
    "keep-last": 1,
  });
  assert.deepEqual(marks.map((m) => m.mark), ["keep", "keep"]);
});
