#!/usr/bin/env bash
# Every Markdown document a file names must exist, and every section pointer into one ("§N" or
# "§N.M") must name a heading of that document: "## N." for a section, "### N.M ..." (any heading
# level) for a subsection. Checked in every tracked file and every untracked file git does not ignore.
#
# - A document name (anything ending in the Markdown extension, URLs excepted) resolves against the
#   repository root or against the directory of the file that names it.
# - A section pointer belongs to the document named last before it on the same line; in files under
#   docs/ a pointer with no document before it on its line refers to the file itself. Pointers
#   elsewhere with no document named on their line are not checked.
#
#   tests/scripts/check-doc-refs.sh     # prints each bad reference as file:line, exits 1 if any
set -euo pipefail
cd "$(dirname "$0")/../.."

git ls-files -z --cached --others --exclude-standard | perl -0 -e '
  use strict;
  use warnings;
  use utf8;    # this program text is UTF-8 (the section sign)
  use File::Basename qw(dirname);
  binmode STDOUT, ":utf8";
  my (%sections, $bad, $files);
  # Numbered headings of a document: "## N." gives "N"; "#... N.M" gives "N.M".
  sub sections_of {
    my ($doc) = @_;
    return $sections{$doc} if $sections{$doc};
    my %s;
    local $/ = "\n";    # -0 made NUL the record separator for the file list
    if (open(my $fh, "<", $doc)) {    # headings are matched on ASCII only; no decoding needed
      while (my $l = <$fh>) {
        $s{$1} = 1 if $l =~ /^##\s+(\d+)\.\s/;
        $s{$1} = 1 if $l =~ /^#{2,6}\s+(\d+(?:\.\d+)+)[.\s]/;
      }
    }
    return $sections{$doc} = \%s;
  }
  sub resolve {
    my ($name, $dir) = @_;
    for my $cand ($name, "$dir/$name") {
      next unless -e $cand;
      my $p = $cand;
      $p =~ s{(^|/)\./}{$1}g;
      1 while $p =~ s{(^|/)(?!\.\./)[^/]+/\.\./}{$1};
      return $p;
    }
    return undef;
  }
  while (defined(my $file = <STDIN>)) {
    chomp $file;
    next unless -f $file;
    open(my $fh, "<:raw", $file) or next;
    my $text = do { local $/; <$fh> };
    close $fh;
    next if index($text, "\0") >= 0;    # binary
    utf8::decode($text);
    $files++;
    my $dir = dirname($file);
    my $self = $file =~ m{^docs/[^/]+\.md$} ? $file : undef;
    my $n = 0;
    for my $line (split /\n/, $text, -1) {
      $n++;
      next unless $line =~ /\.md|§/;
      $line =~ s{\b[A-Za-z][A-Za-z0-9+.-]*://\S+}{ }g;    # URLs
      my $target = $self;
      while ($line =~ /([A-Za-z0-9_.\/-]*[A-Za-z0-9_-]\.md)\b|§(\d+(?:\.\d+)*)/g) {
        if (defined $1) {
          my $name = $1;
          $target = resolve($name, $dir);
          next if defined $target;
          print "$file:$n: $name does not exist\n";
          $bad++;
        } elsif (defined $target && !sections_of($target)->{$2}) {
          print "$file:$n: $target has no section §$2\n";
          $bad++;
        }
      }
    }
  }
  if ($bad) {
    print "check-doc-refs: $bad bad reference(s)\n";
    exit 1;
  }
  print "check-doc-refs: ok ($files files)\n";
'
