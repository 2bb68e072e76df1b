import { useLocation } from 'preact-iso';
import { session } from '../session';

/** The skip link, the site name, the navigation and who is logged in. */
export function Header() {
  const { path } = useLocation();
  const s = session.value;
  const link = (href: string, label: string) => (
    <li>
      <a href={href} aria-current={path === href || (href !== '/' && path.startsWith(href)) ? 'page' : undefined}>
        {label}
      </a>
    </li>
  );
  return (
    <header class="site-header">
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <a class="brand" href="/">
        Tickets
      </a>
      <nav aria-label="Main">
        <ul>
          {link('/', 'Concerts')}
          {s && link('/tickets', 'My tickets')}
          {s && link('/wallet', 'Wallet')}
          {s?.user.role === 'ADMIN' && link('/admin', 'Organiser')}
          {s ? link('/account', `Account (${s.user.username})`) : link('/login', 'Log in')}
          {!s && link('/signup', 'Sign up')}
        </ul>
      </nav>
    </header>
  );
}
