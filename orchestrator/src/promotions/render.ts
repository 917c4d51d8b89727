/**
 * Fills {firstName} and {displayName}. Unknown visitors have no name: the placeholders vanish together with the
 * separator before them, so "Welcome, {firstName}!" reads "Welcome!" rather than "Welcome, !".
 */
export function renderMessage(template: string, displayName: string | null): string {
  if (displayName) {
    const firstName = displayName.trim().split(/\s+/)[0] ?? displayName;
    return template.replaceAll("{firstName}", firstName).replaceAll("{displayName}", displayName.trim());
  }
  return template
    .replace(/[ \t]*[,;:]?[ \t]*\{(firstName|displayName)\}/g, "")
    .replace(/\s{2,}/g, " ")
    .trim();
}
