//! Drawing a [`View`] with ratatui: the header, the workers' table, the footer.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row, Table};

use super::state::{COLUMNS, View};

/// Draws `view` over the whole frame.
pub(crate) fn draw(frame: &mut Frame<'_>, view: &View) {
    let [header, table, footer] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    frame.render_widget(
        Paragraph::new(vec![
            Line::styled(view.title.as_str(), bold),
            Line::raw(view.summary.as_str()),
        ]),
        header,
    );
    let width = |i: usize, min: usize, max: usize| {
        let widest = view
            .rows
            .iter()
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0);
        Constraint::Length(widest.clamp(min, max) as u16)
    };
    let widths = [
        width(0, 4, 24),
        width(1, 8, 10),
        width(2, 3, 8),
        Constraint::Length(8),
        width(4, 6, 8),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    let rows = view.rows.iter().map(|cells| {
        let style = match cells[1].as_str() {
            "LOOPING" => Style::default().fg(Color::Green),
            "FAILED" => Style::default().fg(Color::Red),
            "EXITED" => Style::default().fg(Color::DarkGray),
            _ => Style::default().fg(Color::Yellow),
        };
        Row::new(cells.iter().map(String::as_str)).style(style)
    });
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(COLUMNS).style(bold.add_modifier(Modifier::REVERSED)))
            .column_spacing(1),
        table,
    );
    frame.render_widget(
        Paragraph::new(Line::styled(
            view.footer.as_str(),
            Style::default().add_modifier(Modifier::DIM),
        )),
        footer,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;

    #[test]
    fn the_view_is_drawn_with_every_worker() {
        let view = View {
            title: "shop 2.1 (daimon 0.1.0)".into(),
            summary: "pid 42  up 3m 07s".into(),
            rows: vec![
                [
                    "w0", "LOOPING", "100", "0", "1m 07s", "0.5", "2.0M", "hello",
                ]
                .map(String::from)
                .to_vec(),
                ["a-long-worker", "FAILED", "-", "12", "-", "-", "-", ""]
                    .map(String::from)
                    .to_vec(),
            ],
            footer: "q quit".into(),
        };
        let mut terminal = Terminal::new(TestBackend::new(80, 10)).unwrap();
        terminal.draw(|f| draw(f, &view)).unwrap();
        let screen: Vec<String> = terminal
            .backend()
            .buffer()
            .content()
            .chunks(80)
            .map(|row| row.iter().map(|c| c.symbol()).collect())
            .collect();
        assert!(
            screen[0].starts_with("shop 2.1 (daimon 0.1.0)"),
            "{screen:#?}"
        );
        assert!(screen[1].starts_with("pid 42  up 3m 07s"), "{screen:#?}");
        let header = screen
            .iter()
            .position(|l| l.starts_with("NAME"))
            .expect("a header row");
        let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(cells(&screen[header])[..3], ["NAME", "STATE", "PID"]);
        assert_eq!(
            cells(&screen[header + 1]),
            [
                "w0", "LOOPING", "100", "0", "1m", "07s", "0.5", "2.0M", "hello"
            ]
        );
        assert_eq!(
            cells(&screen[header + 2])[..3],
            ["a-long-worker", "FAILED", "-"]
        );
        assert!(screen[9].starts_with("q quit"), "{screen:#?}");
    }
}
