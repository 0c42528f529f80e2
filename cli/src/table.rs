//! How the CLI prints a table. Every table of every command is built by [`render`], so they
//! all look alike and stay readable by scripts: a header row, one line per row, columns two
//! spaces apart and as wide as their widest cell, no borders, no colour, never wrapped to the
//! terminal's width. Numbers are right-aligned. What goes into the cells is the commands' business.

use comfy_table::{CellAlignment, ContentArrangement, Row, Table};

/// Spaces between two columns.
const GAP: u16 = 2;

/// One column of a table: its header and how its cells align.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    header: &'static str,
    alignment: CellAlignment,
}

impl Column {
    /// A column of text, aligned left.
    pub const fn left(header: &'static str) -> Self {
        Self {
            header,
            alignment: CellAlignment::Left,
        }
    }

    /// A column of numbers (counts, percentages, durations, `n/m`), aligned right.
    pub const fn right(header: &'static str) -> Self {
        Self {
            header,
            alignment: CellAlignment::Right,
        }
    }
}

/// The table of `rows` under `columns`, each line ending with a newline and no trailing
/// spaces. An empty cell shows as `-`, and a line break or other control character in a cell
/// as a space, so that every row stays one line and every column has a word in it.
pub fn render<R, C>(columns: &[Column], rows: R) -> String
where
    R: IntoIterator<Item = C>,
    C: IntoIterator<Item = String>,
{
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|c| c.header).collect::<Vec<_>>());
    for row in rows {
        let cells: Vec<String> = row.into_iter().map(cell).collect();
        debug_assert_eq!(cells.len(), columns.len(), "a row with a cell per column");
        table.add_row(Row::from(cells));
    }
    let last = columns.len().saturating_sub(1);
    for (index, (column, spec)) in table.column_iter_mut().zip(columns).enumerate() {
        column.set_cell_alignment(spec.alignment);
        column.set_padding((0, if index == last { 0 } else { GAP }));
    }
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn cell(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else if text.contains(char::is_control) {
        text.replace(char::is_control, " ")
    } else {
        text
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Where `table` (header line first, then one line per row of `cells`) puts a cell
    /// elsewhere than its column's place: a left-aligned cell must start where its header
    /// starts, a right-aligned one end where its header ends, on every line. `None` when
    /// every cell is in place.
    pub(crate) fn misplaced(
        table: &str,
        columns: &[Column],
        cells: &[Vec<&str>],
    ) -> Option<String> {
        let lines: Vec<Vec<char>> = table.lines().map(|l| l.chars().collect()).collect();
        if lines.len() != cells.len() + 1 {
            return Some(format!("{} lines for {} rows", lines.len(), cells.len()));
        }
        let rows = std::iter::once(columns.iter().map(|c| c.header).collect::<Vec<_>>())
            .chain(cells.iter().cloned());
        // Each column's place, from the header line: headers are single words here.
        let mut places = Vec::new();
        let mut from = 0;
        for column in columns {
            let header: Vec<char> = column.header.chars().collect();
            let start = (from..lines[0].len()).find(|&at| lines[0][at..].starts_with(&header))?;
            places.push((start, start + header.len()));
            from = start + header.len();
        }
        for (number, (line, row)) in lines.iter().zip(rows).enumerate() {
            for ((column, &(start, end)), text) in columns.iter().zip(&places).zip(row) {
                let text: Vec<char> = text.chars().collect();
                let at = match column.alignment {
                    CellAlignment::Right => end.checked_sub(text.len()),
                    _ => Some(start),
                };
                let placed = at.is_some_and(|at| {
                    line.get(at..at + text.len()) == Some(&text[..])
                        && (at == 0 || line[at - 1] == ' ')
                        && line.get(at + text.len()).is_none_or(|c| *c == ' ')
                });
                if !placed {
                    return Some(format!(
                        "line {number}, column {}: {:?} is not at {at:?} in {:?}",
                        column.header,
                        text.iter().collect::<String>(),
                        line.iter().collect::<String>()
                    ));
                }
            }
        }
        None
    }

    const COLUMNS: [Column; 4] = [
        Column::left("JOB"),
        Column::left("EVERY"),
        Column::right("RUNS"),
        Column::left("TARGET"),
    ];

    fn long_cells() -> Vec<Vec<&'static str>> {
        vec![
            vec!["poll-1", "30s", "7", "olt-1"],
            vec![
                "olt-huawei-1-optical",
                "after olt-huawei-1-discovery",
                "123456",
                "olt-huawei-1",
            ],
            vec!["x", "once", "0", "a-target-with-a-rather-long-name"],
        ]
    }

    fn rendered(cells: &[Vec<&str>]) -> String {
        render(
            &COLUMNS,
            cells
                .iter()
                .map(|row| row.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>()),
        )
    }

    #[test]
    fn long_cells_leave_every_column_in_its_place() {
        let cells = long_cells();
        let table = rendered(&cells);
        assert_eq!(misplaced(&table, &COLUMNS, &cells), None, "\n{table}");
        assert_eq!(
            table,
            "\
JOB                   EVERY                           RUNS  TARGET
poll-1                30s                                7  olt-1
olt-huawei-1-optical  after olt-huawei-1-discovery  123456  olt-huawei-1
x                     once                               0  a-target-with-a-rather-long-name
"
        );
    }

    /// The check above is not vacuous: the hand-written tables it replaces (fixed widths, and
    /// a newtype whose `Display` ignores the width) fail it.
    #[test]
    fn fixed_width_formatting_fails_the_check() {
        struct Name<'a>(&'a str);
        impl std::fmt::Display for Name<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        let cells = long_cells();
        let old = |cells: &[Vec<&str>]| {
            let mut text = format!("{:<20} {:<10} {:>6} {}\n", "JOB", "EVERY", "RUNS", "TARGET");
            for row in cells {
                text += &format!("{:<20} {:<10} {:>6} {}\n", row[0], row[1], row[2], row[3]);
            }
            text
        };
        assert!(misplaced(&old(&cells), &COLUMNS, &cells).is_some());
        // Short cells fit the widths, yet a newtype's `Display` ignores them.
        let short = vec![vec!["poll-1", "30s", "7", "olt-1"]];
        assert_eq!(misplaced(&old(&short), &COLUMNS, &short), None);
        let newtype = format!(
            "{:<20} {:<10} {:>6} {}\n{:<20} {:<10} {:>6} {}\n",
            "JOB",
            "EVERY",
            "RUNS",
            "TARGET",
            Name("poll-1"),
            "30s",
            "7",
            "olt-1"
        );
        assert!(misplaced(&newtype, &COLUMNS, &short).is_some());
    }

    #[test]
    fn empty_cells_and_line_breaks_keep_one_line_per_row() {
        let table = render(
            &[Column::left("A"), Column::left("B"), Column::right("N")],
            [vec![String::new(), "two\nlines".to_owned(), "1".to_owned()]],
        );
        assert_eq!(table, "A  B          N\n-  two lines  1\n");
    }

    #[test]
    fn a_table_without_rows_is_its_header() {
        let table = render(
            &[Column::left("NAME"), Column::left("QUEUE")],
            Vec::<Vec<String>>::new(),
        );
        assert_eq!(table, "NAME  QUEUE\n");
    }
}
